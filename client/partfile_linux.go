package client

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages to disk
// without waiting for them. Files without a descriptor are left alone.
func startWriteback(f PartFile) {
	if fd, ok := f.(rawFile); ok {
		unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		return
	}
	rf, ok := f.(*os.File)
	if !ok {
		return
	}
	rc, err := rf.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// writeVector writes bufs at off with one pwritev and returns the bytes
// written. ok is false unless f is an *os.File (a wrapper's own WriteAt
// must not be bypassed): the caller writes the pieces one by one.
func writeVector(f PartFile, bufs [][]byte, off int64) (n int, ok bool, err error) {
	if fd, isFD := f.(rawFile); isFD {
		for {
			n, err = unix.Pwritev(int(fd), bufs, off)
			if err != unix.EINTR {
				return n, true, err
			}
		}
	}
	rf, isRaw := f.(*os.File)
	if !isRaw {
		return 0, false, nil
	}
	rc, err := rf.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	cerr := rc.Control(func(fd uintptr) {
		for {
			n, err = unix.Pwritev(int(fd), bufs, off)
			if err != unix.EINTR {
				return
			}
		}
	})
	if cerr != nil {
		return 0, false, nil
	}
	return n, true, err
}

// directAlign is the alignment O_DIRECT needs of buffers, offsets and
// lengths on the file systems shoal meets (the logical block size is at
// most 4 KiB).
const directAlign = 4096

// directWriter writes whole chunks to the part file with O_DIRECT, past
// the page cache: no copy into cache pages and no dirty pages to flush at
// the end. Chunks are copied into an aligned buffer and the last one is
// padded to the alignment; commit truncates the file to its size.
type directWriter struct {
	f    *os.File
	bufs sync.Pool // *[]byte, aligned, the chunk size
}

// openDirect opens path for direct writes of chunks of chunkSize bytes,
// or returns nil where that cannot work (chunk offsets not aligned, or a
// file system without O_DIRECT, such as tmpfs).
func openDirect(f PartFile, path string, chunkSize int) *directWriter {
	if _, ok := f.(*os.File); !ok || chunkSize%directAlign != 0 {
		return nil
	}
	df, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil
	}
	w := &directWriter{f: df}
	w.bufs.New = func() any {
		b := make([]byte, chunkSize+directAlign)
		skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
		b = b[skip : skip+chunkSize]
		return &b
	}
	return w
}

// write writes one chunk, given in pieces, at off (a multiple of the chunk
// size). ok is false when the file system refused the first write: the
// caller then writes through the page cache.
func (w *directWriter) write(pieces [][]byte, off int64) (ok bool, err error) {
	bp := w.bufs.Get().(*[]byte)
	defer w.bufs.Put(bp)
	buf := *bp
	n := 0
	for _, p := range pieces {
		n += copy(buf[n:], p)
	}
	padded := (n + directAlign - 1) &^ (directAlign - 1)
	clear(buf[n:padded])
	if _, err := w.f.WriteAt(buf[:padded], off); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return false, nil
		}
		return true, err
	}
	return true, nil
}

func (w *directWriter) close() error { return w.f.Close() }

// partFlags open the part file: never through a symbolic link.
const partFlags = os.O_RDWR | os.O_CREATE | unix.O_NOFOLLOW

// lockPart takes an exclusive lock on the part file at path (creating
// it), so that one download at a time writes an output. The returned
// function releases it. A lock held elsewhere is ErrBusyOutput, naming the
// process that holds it where /proc/locks tells.
func lockPart(path string) (func(), error) {
	f, err := os.OpenFile(path, partFlags, 0o644)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: shoal never writes through one; remove it", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return lockOpen(f, path)
}

// lockDir takes an exclusive lock on the folder at path, as lockPart
// does on a file.
func lockDir(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return lockOpen(f, path)
}

// lockOpen takes an exclusive flock on f, opened at path, or closes it.
func lockOpen(f *os.File, path string) (func(), error) {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := lockHolder(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w%s", path, ErrBusyOutput, holder)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// syncTree writes everything of root's file system to disk with one
// syncfs, not one fsync per file of a tree.
func syncTree(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// lockHolder names the process holding a flock on f, as " (pid N)", or ""
// when /proc/locks does not say.
func lockHolder(f *os.File) string {
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return ""
	}
	suffix := fmt.Sprintf(":%d", st.Ino)
	for _, line := range strings.Split(string(b), "\n") {
		// "1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF"
		fields := strings.Fields(line)
		if len(fields) >= 6 && fields[1] == "FLOCK" && strings.HasSuffix(fields[5], suffix) {
			return fmt.Sprintf(" (pid %s)", fields[4])
		}
	}
	return ""
}

// rawFile is a file descriptor used with plain system calls, past the
// runtime's poller (which a regular file does not need): a tree's many
// small files cost an open, a write and a close each.
type rawFile int

func (f rawFile) WriteAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pwrite(int(f), p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

func (f rawFile) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(int(f), p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, io.EOF
		}
		done += n
	}
	return done, nil
}

func (f rawFile) Truncate(size int64) error { return unix.Ftruncate(int(f), size) }
func (f rawFile) Sync() error               { return unix.Fsync(int(f)) }
func (f rawFile) Close() error              { return unix.Close(int(f)) }

// openBeneath opens p below the folder dir with openat2, which resolves
// no symbolic link and nothing outside dir. ok is false where the kernel
// has no openat2: the caller opens through an os.Root.
func openBeneath(dir *os.File, p string, flags int, perm os.FileMode) (f PartFile, ok bool, err error) {
	rc, err := dir.SyscallConn()
	if err != nil {
		return nil, false, nil
	}
	var fd int
	cerr := rc.Control(func(dfd uintptr) {
		how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(perm), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS}
		for {
			fd, err = unix.Openat2(int(dfd), p, how)
			if err != unix.EINTR {
				return
			}
		}
	})
	switch {
	case cerr != nil, errors.Is(err, unix.ENOSYS):
		return nil, false, nil
	case err != nil:
		return nil, true, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return rawFile(fd), true, nil
}
