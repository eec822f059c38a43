package chunkstore

import (
	"encoding/gob"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// indexVersion changes whenever the index layout or the hashing scheme does;
// an index of another version is ignored.
const indexVersion = 1

// indexFile is the on-disk form of the index.
type indexFile struct {
	Version int
	Files   []indexEntry
}

type indexEntry struct {
	Name      string
	Stamp     stamp
	Size      int64
	ChunkSize int
	Hashes    []Hash
}

// loadIndex reads the index at p. A missing or unreadable index is an empty
// one: the store then rehashes.
func loadIndex(p string, log *slog.Logger) map[string]*entry {
	out := map[string]*entry{}
	if p == "" {
		return out
	}
	f, err := os.Open(p)
	if err != nil {
		return out
	}
	defer f.Close()
	var idx indexFile
	if err := gob.NewDecoder(f).Decode(&idx); err != nil || idx.Version != indexVersion {
		log.Warn("ignoring unreadable index", "path", p, "err", err)
		return out
	}
	for _, ie := range idx.Files {
		m := &Manifest{Name: ie.Name, Size: ie.Size, ChunkSize: ie.ChunkSize, Hashes: ie.Hashes}
		if m.ChunkSize != ChunkSizeFor(m.Size) || m.Verify(ComputeID(m.Size, m.ChunkSize, m.Hashes)) != nil {
			continue
		}
		out[ie.Name] = &entry{m: m, stamp: ie.Stamp}
	}
	return out
}

// saveIndex writes the index atomically: a temporary file, then rename.
func (s *Store) saveIndex() error {
	p := s.cfg.IndexPath
	if p == "" {
		return nil
	}
	s.mu.RLock()
	idx := indexFile{Version: indexVersion}
	for name, e := range s.byName {
		idx.Files = append(idx.Files, indexEntry{Name: name, Stamp: e.stamp, Size: e.m.Size, ChunkSize: e.m.ChunkSize, Hashes: e.m.Hashes})
	}
	s.mu.RUnlock()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".index-*")
	if err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := gob.NewEncoder(tmp).Encode(&idx); err != nil {
		tmp.Close()
		return fmt.Errorf("save index: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	return nil
}
