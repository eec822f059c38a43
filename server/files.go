package server

import (
	"context"
	"sync/atomic"

	"github.com/shoalnet/shoal/chunkstore"
)

// StoreFiles serves the complete files of a chunkstore.Store.
type StoreFiles struct {
	*chunkstore.Store
}

// OpenChunks opens a file of the store.
func (s StoreFiles) OpenChunks(id chunkstore.ID) (ChunkReader, error) {
	r, err := s.Store.OpenChunks(id)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// WatchHave reports every chunk of a stored file, once.
func (s StoreFiles) WatchHave(_ context.Context, id chunkstore.ID, fn func([]bool, []int, bool) error) error {
	m, err := s.Store.Manifest(id)
	if err != nil {
		return err
	}
	have := make([]bool, m.NumChunks())
	for i := range have {
		have[i] = true
	}
	return fn(have, nil, true)
}

// Holdings lists the store's files for announces.
func (s StoreFiles) Holdings() []FileInfo {
	var out []FileInfo
	for _, m := range s.Store.List() {
		out = append(out, FileInfo{ID: m.ID, Name: m.Name, Size: m.Size})
	}
	return out
}

// Stats counts what a peer served.
type Stats struct {
	BytesServed  atomic.Int64 // chunk bytes sent
	ChunksServed atomic.Int64 // whole chunks sent
}
