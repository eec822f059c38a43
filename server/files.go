package server

import (
	"context"
	"slices"
	"strings"
	"sync"
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

// An announce lists at most maxAnnounced entries (a registry's default
// MaxFilesPerPeer), of them at most maxAnnouncedFolders folders; each kind
// shallowest first. A folder of more files is still found whole, by its
// name or tree id: its files are fetched through its tree.
const (
	maxAnnounced        = 10_000
	maxAnnouncedFolders = 1000
)

// shallowFirst orders entries by depth, then name.
func shallowFirst(a, b FileInfo) int {
	if d := strings.Count(a.Name, "/") - strings.Count(b.Name, "/"); d != 0 {
		return d
	}
	return strings.Compare(a.Name, b.Name)
}

// Holdings lists the store's folders and files for announces, within
// maxAnnounced. A folder is named by its path and a trailing '/', the
// shared folder itself "./".
func (s StoreFiles) Holdings() []FileInfo {
	var files []FileInfo
	for _, m := range s.Store.List() {
		files = append(files, FileInfo{ID: m.ID, Name: m.Name, Size: m.Size})
	}
	var folders []FileInfo
	for id, f := range s.Store.Folders() {
		name := "./"
		if f.Dir != "" {
			name = f.Dir + "/"
		}
		folders = append(folders, FileInfo{ID: chunkstore.ID(id), Name: name, Size: f.Size, Tree: true, Files: f.Files})
	}
	slices.SortFunc(folders, shallowFirst)
	out := folders[:min(len(folders), maxAnnouncedFolders)]
	if len(files)+len(out) > maxAnnounced {
		slices.SortFunc(files, shallowFirst)
		files = files[:maxAnnounced-len(out)]
	}
	return append(files, out...)
}

// Stats counts what a peer served.
type Stats struct {
	BytesServed  atomic.Int64 // chunk bytes sent
	ChunksServed atomic.Int64 // whole chunks sent

	mu    sync.Mutex
	peers map[string]bool // client IPs served a chunk, at most maxStatsPeers; guarded by mu
}

// maxStatsPeers bounds the client IPs Stats remembers.
const maxStatsPeers = 100_000

// served records that ip was sent a chunk.
func (s *Stats) served(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peers == nil {
		s.peers = map[string]bool{}
	}
	if len(s.peers) < maxStatsPeers {
		s.peers[ip] = true
	}
}

// PeersServed is how many client IPs were sent at least one chunk.
func (s *Stats) PeersServed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}
