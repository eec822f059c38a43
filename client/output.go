package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/shoalnet/shoal/chunkstore"
)

// output is the file being written: OUT.part until commit renames it.
type output struct {
	path, part string
	m          *chunkstore.Manifest
	cfg        Config
	mu         sync.Mutex // guards f against close while serving
	f          PartFile
	unlock     func()                       // releases the lock on the part file; guarded by mu
	have       []bool                       // chunks already verified in the part file
	resumed    int64                        // their bytes
	already    bool                         // OUT already holds exactly this file
	unflushed  atomic.Int64                 // bytes written since the last background sync started
	syncing    atomic.Bool                  // a background sync is under way
	syncs      sync.WaitGroup               // the background sync, waited for before f closes
	syncErr    atomic.Pointer[error]        // the first background sync's failure
	directFile *directWriter                // O_DIRECT handle, if opened; closed with the output
	direct     atomic.Pointer[directWriter] // directFile while direct writes work, else nil
}

// openOutput checks OUT, opens OUT.part and finds the chunks it already
// holds.
func openOutput(ctx context.Context, path string, m *chunkstore.Manifest, cfg Config) (*output, error) {
	o := &output{path: path, part: path + ".part", m: m, cfg: cfg}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("output folder %s does not exist", dir)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symbolic link: shoal never writes through one; remove it or choose another -o", path)
	}
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s exists and is not a regular file", path)
		}
		if len(m.Hashes) > 0 && fi.Size() == m.Size && sameContents(ctx, path, m, cfg.VerifyWorkers) {
			o.already = true
			if cfg.Serve {
				// Seed the finished file as it is: read-only, never renamed.
				f, err := os.OpenFile(path, os.O_RDONLY|partFlags&^(os.O_RDWR|os.O_CREATE), 0)
				if err != nil {
					return nil, fmt.Errorf("open %s: %w", path, err)
				}
				o.f = f
				o.have = make([]bool, m.NumChunks())
				for i := range o.have {
					o.have[i] = true
				}
				o.resumed = m.Size
			}
			return o, nil
		}
		if !cfg.Force {
			return nil, fmt.Errorf("%s: %w (use --force to replace it)", path, ErrExists)
		}
	}
	unlock, err := lockPart(o.part)
	if err != nil {
		return nil, err
	}
	o.unlock = unlock
	f, err := cfg.OpenPart(o.part)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("open %s: %w", o.part, err)
	}
	o.f = f
	if len(m.Hashes) > 0 {
		o.have, o.resumed = verifyChunks(ctx, f, m, cfg.VerifyWorkers)
	}
	if err := f.Truncate(m.Size); err != nil {
		f.Close()
		unlock()
		return nil, fmt.Errorf("size %s: %w", o.part, err)
	}
	if cfg.Direct {
		o.directFile = openDirect(f, o.part, m.ChunkSize)
		o.direct.Store(o.directFile)
	}
	return o, nil
}

// verifyChunks hashes every chunk of r and reports which match m.
func verifyChunks(ctx context.Context, r io.ReaderAt, m *chunkstore.Manifest, workers int) ([]bool, int64) {
	n := m.NumChunks()
	have := make([]bool, n)
	bytes := make([]int64, workers)
	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			buf := make([]byte, m.ChunkSize)
			for i := w; i < n; i += workers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				off, l := m.ChunkBounds(i)
				if k, _ := r.ReadAt(buf[:l], off); k == l && m.VerifyChunk(i, buf[:l]) == nil {
					have[i] = true
					bytes[w] += int64(l)
				}
			}
			return nil
		})
	}
	if g.Wait() != nil {
		return make([]bool, n), 0
	}
	var total int64
	for _, b := range bytes {
		total += b
	}
	return have, total
}

// sameContents reports whether the file at path is exactly m.
func sameContents(ctx context.Context, path string, m *chunkstore.Manifest, workers int) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	_, n := verifyChunks(ctx, f, m, workers)
	return n == m.Size
}

// write stores verified chunk bytes, given in pieces, from off on. Pieces
// go out in batches of at most WriteSize bytes, several in one vectored
// write where the file allows it; a background sync starts every
// WritebackEvery bytes.
func (o *output) write(pieces [][]byte, off int64) error {
	if err := o.writeAt(pieces, off); err != nil {
		return err
	}
	size := 0
	for _, p := range pieces {
		size += len(p)
	}
	if o.cfg.WritebackEvery > 0 && o.unflushed.Add(int64(size)) >= o.cfg.WritebackEvery && o.syncing.CompareAndSwap(false, true) {
		o.unflushed.Store(0)
		o.syncs.Go(o.backgroundSync)
	}
	return nil
}

func (o *output) writeAt(pieces [][]byte, off int64) error {
	if w := o.direct.Load(); w != nil {
		ok, err := w.write(pieces, off)
		if ok {
			if err != nil {
				return fmt.Errorf("write %s: %w", o.part, err)
			}
			return nil
		}
		o.direct.Store(nil) // the file system refused: the page cache from now on
	}
	if err := writePieces(o.f, pieces, off, o.cfg.WriteSize); err != nil {
		return fmt.Errorf("write %s: %w", o.part, err)
	}
	return nil
}

// backgroundSync flushes what was written so far to disk while the
// download goes on: the fsync before the rename then waits for the last
// WritebackEvery bytes only. Direct writes leave no dirty pages, but they
// sit in the disk's write cache: on the VM measured, the final fsync of a
// 1 GiB file written directly took 0.5 s. A failure is kept for commit.
func (o *output) backgroundSync() {
	defer o.syncing.Store(false)
	if err := o.f.Sync(); err != nil {
		o.syncErr.CompareAndSwap(nil, &err)
	}
}

// writePieces writes pieces back to back from off on, in batches of at
// most writeSize bytes, several pieces in one vectored write where f
// allows it.
func writePieces(f PartFile, pieces [][]byte, off int64, writeSize int) error {
	var batch [][]byte
	size := 0
	flush := func() error {
		if size == 0 {
			return nil
		}
		if err := writeBatch(f, batch, off); err != nil {
			return err
		}
		off += int64(size)
		batch, size = batch[:0], 0
		return nil
	}
	for _, p := range pieces {
		for len(p) > 0 {
			n := min(len(p), writeSize-size)
			batch, size = append(batch, p[:n]), size+n
			p = p[n:]
			if size == writeSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// writeBatch writes bufs back to back at off.
func writeBatch(f PartFile, bufs [][]byte, off int64) error {
	done := 0
	if len(bufs) > 1 {
		n, ok, err := writeVector(f, bufs, off)
		if err != nil {
			return err
		}
		if ok {
			done = n
		}
	}
	// Whatever a vectored write did not take, one piece at a time.
	for _, b := range bufs {
		if done >= len(b) {
			done -= len(b)
			off += int64(len(b))
			continue
		}
		b, off = b[done:], off+int64(done)
		done = 0
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// commit syncs the part file and renames it to OUT. Every chunk was checked
// against the manifest, and the manifest against the content id, before it
// was written at its offset; with VerifyOutput the file is also read back
// and hashed whole first.
func (o *output) commit(ctx context.Context) error {
	o.syncs.Wait()
	if err := o.syncErr.Load(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrDisk, o.part, *err)
	}
	if o.cfg.VerifyOutput && len(o.m.Hashes) > 0 {
		if _, n := verifyChunks(ctx, o.f, o.m, o.cfg.VerifyWorkers); n != o.m.Size {
			return fmt.Errorf("%w: %s does not match %s after writing", ErrDisk, o.part, o.m.ID)
		}
	}
	if o.directFile != nil {
		// Direct writes pad the last chunk to the alignment.
		if err := o.f.Truncate(o.m.Size); err != nil {
			return fmt.Errorf("%w: size %s: %w", ErrDisk, o.part, err)
		}
		if err := o.directFile.close(); err != nil {
			return fmt.Errorf("%w: close %s: %w", ErrDisk, o.part, err)
		}
		o.directFile = nil
		o.direct.Store(nil)
	}
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrDisk, o.part, err)
	}
	if !o.cfg.Serve {
		err := o.f.Close()
		o.f = nil
		if err != nil {
			return fmt.Errorf("%w: close %s: %w", ErrDisk, o.part, err)
		}
	}
	// A serving download keeps reading through the open file: the rename
	// does not change what it refers to.
	if err := os.Rename(o.part, o.path); err != nil {
		return fmt.Errorf("%w: %w", ErrDisk, err)
	}
	if d, err := os.Open(filepath.Dir(o.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// close releases the part file if commit did not.
func (o *output) close() {
	o.syncs.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.directFile != nil {
		o.directFile.close()
		o.directFile = nil
		o.direct.Store(nil)
	}
	if o.f != nil {
		o.f.Close()
		o.f = nil
	}
	if o.unlock != nil {
		o.unlock()
		o.unlock = nil
	}
}

// writeChunk writes verified chunk i.
func (o *output) writeChunk(i int, pieces [][]byte) error {
	off, _ := o.m.ChunkBounds(i)
	return o.write(pieces, off)
}

// readChunk reads verified chunk i into buf, for serving.
func (o *output) readChunk(i int, buf []byte) ([]byte, error) {
	off, n := o.m.ChunkBounds(i)
	if _, err := o.readAt(buf[:n], off); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// partPath is the part file.
func (o *output) partPath() string { return o.part }

// readAt reads verified bytes for serving.
func (o *output) readAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	f := o.f
	o.mu.Unlock()
	if f == nil {
		return 0, fmt.Errorf("%s: closed", o.part)
	}
	return f.ReadAt(p, off)
}
