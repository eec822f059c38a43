package chunkstore

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader reads the chunks of one file, checking on every read that the file
// is still the version its manifest describes.
type Reader struct {
	s    *Store
	name string
	e    *entry
	f    *os.File
}

// OpenChunks opens the file with content id id for chunk reads.
func (s *Store) OpenChunks(id ID) (*Reader, error) {
	s.mu.RLock()
	e, ok := s.byID[id]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	f, err := s.root.Open(e.m.Name)
	if err != nil {
		s.withdraw(e)
		return nil, fmt.Errorf("%s: %w", e.m.Name, ErrChanged)
	}
	return &Reader{s: s, name: e.m.Name, e: e, f: f}, nil
}

// Manifest is the manifest the reader's chunks match.
func (r *Reader) Manifest() *Manifest { return r.e.m }

// ReadChunk reads chunk i into buf, which must hold ChunkSize bytes, and
// returns the filled part. If the file changed since it was hashed the file
// is withdrawn and ErrChanged returned: stale bytes are never handed out.
func (r *Reader) ReadChunk(i int, buf []byte) ([]byte, error) {
	m := r.e.m
	if i < 0 || i >= m.NumChunks() {
		return nil, fmt.Errorf("chunk %d of %d: %w", i, m.NumChunks(), ErrOutOfRange)
	}
	off, n := m.ChunkBounds(i)
	if _, err := r.f.ReadAt(buf[:n], off); err != nil {
		if errors.Is(err, io.EOF) {
			r.s.withdraw(r.e)
			return nil, fmt.Errorf("%s chunk %d: %w", r.name, i, ErrChanged)
		}
		return nil, fmt.Errorf("read %s chunk %d: %w", r.name, i, err)
	}
	// Any write before or during the read moved the change time by now; a
	// write after this check cannot affect bytes already read.
	fi, err := r.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", r.name, err)
	}
	if stampOf(fi) != r.e.stamp {
		r.s.withdraw(r.e)
		return nil, fmt.Errorf("%s chunk %d: %w", r.name, i, ErrChanged)
	}
	return buf[:n], nil
}

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// OpenFile opens the servable file at name, a '/'-separated path
// relative to the folder, for reads at any offset. Only what the store
// serves can be opened: never a dot-file, a symlink, or a path outside
// the folder.
func (s *Store) OpenFile(name string) (*Reader, error) {
	m, err := s.ManifestByName(name)
	if err != nil {
		return nil, err
	}
	return s.OpenChunks(m.ID)
}

// ReadAt reads len(p) bytes at off, as ReadChunk does: if the file changed
// since it was hashed, it is withdrawn and ErrChanged returned.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > r.e.m.Size {
		return 0, fmt.Errorf("%s: read of %d bytes at %d: %w", r.name, len(p), off, ErrOutOfRange)
	}
	n, err := r.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) && n < len(p) {
		r.s.withdraw(r.e)
		return n, fmt.Errorf("%s: %w", r.name, ErrChanged)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("read %s: %w", r.name, err)
	}
	fi, err := r.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", r.name, err)
	}
	if stampOf(fi) != r.e.stamp {
		r.s.withdraw(r.e)
		return 0, fmt.Errorf("%s: %w", r.name, ErrChanged)
	}
	return n, nil
}
