package client

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages to disk
// without waiting for them. Files without a descriptor are left alone.
func startWriteback(f PartFile) {
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
