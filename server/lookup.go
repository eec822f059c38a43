package server

import (
	"fmt"
	"slices"

	"github.com/shoalnet/shoal/chunkstore"
)

// Queries of the lease table: what registries answer clients.

// Lookup finds a file by content id, or by name when byName is set, and
// picks up to limit live holders at random, leaving out those in exclude.
// It also returns how many live holders there are in all.
func (l *Leases) Lookup(id chunkstore.ID, name string, byName bool, limit int, exclude []string) (FileInfo, []Peer, int, error) {
	if limit <= 0 || limit > l.cfg.MaxLookup {
		limit = l.cfg.MaxLookup
	}
	if len(exclude) > 10_000 {
		return FileInfo{}, nil, 0, fmt.Errorf("%w: exclude list over 10000 ids", errTooLarge)
	}
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if byName {
		ids := l.names[name]
		switch len(ids) {
		case 0:
			return FileInfo{}, nil, 0, fmt.Errorf("no file named %s: %w", chunkstore.Clip(name), chunkstore.ErrNotFound)
		case 1:
			id = ids[0]
		default:
			msg := fmt.Sprintf("%s is %d different files; ask by content id:", chunkstore.Clip(name), len(ids))
			for _, id := range ids {
				msg += fmt.Sprintf(" %s (%d bytes)", id, l.files[id].info.Size)
			}
			return FileInfo{}, nil, 0, fmt.Errorf("%w: %s", errAmbiguous, msg)
		}
	}
	h := l.files[id]
	if h == nil {
		return FileInfo{}, nil, 0, fmt.Errorf("file %s: %w", id, chunkstore.ErrNotFound)
	}
	skip := make(map[string]bool, len(exclude)+limit)
	for _, x := range exclude {
		skip[x] = true
	}
	var out []Peer
	pick := func(pid string) {
		if !skip[pid] {
			skip[pid] = true
			out = append(out, l.peers[pid].Peer)
		}
	}
	// Random picks while they are cheap; then a scan from a random start
	// so that a long exclude list still finds every remaining holder.
	n := len(h.ids)
	for tries := 0; tries < 4*limit && len(out) < limit && n > 0; tries++ {
		pick(h.ids[l.rnd.IntN(n)])
	}
	if len(out) < limit && n > 0 {
		start := l.rnd.IntN(n)
		for k := 0; k < n && len(out) < limit; k++ {
			pick(h.ids[(start+k)%n])
		}
	}
	info := h.info
	info.Partial, info.HidesChunks = false, false
	return info, out, n, nil
}

// ListedFile is a file with its holder count.
type ListedFile struct {
	FileInfo
	Holders        int // live peers holding all of it
	PartialHolders int // live peers holding part of it
}

// List returns every file with live holders, sorted by name then id. The
// slice is shared until the index changes (a listing is read a page at a
// time, and refreshes do not change it): callers must not modify it.
func (l *Leases) List() []ListedFile {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if l.listed != nil && l.listedAt == l.version {
		return l.listed
	}
	// Which files each peer holds in part, built once: asking each
	// holder's file list per file would cost files x holders x list length.
	partial := map[string]map[chunkstore.ID]bool{}
	for pid, e := range l.peers {
		for _, f := range e.Files {
			if f.Partial && !f.HidesChunks {
				if partial[pid] == nil {
					partial[pid] = map[chunkstore.ID]bool{}
				}
				partial[pid][f.ID] = true
			}
		}
	}
	out := make([]ListedFile, 0, len(l.files))
	for id, h := range l.files {
		lf := ListedFile{FileInfo: h.info}
		for _, pid := range h.ids {
			if partial[pid][id] {
				lf.PartialHolders++
			} else {
				lf.Holders++
			}
		}
		out = append(out, lf)
	}
	slices.SortFunc(out, func(a, b ListedFile) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	l.listed, l.listedAt = out, l.version
	return out
}
