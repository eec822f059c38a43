package chunkstore

import (
	"fmt"
	"slices"
	"strings"
)

// ancestors returns every folder that holds one of the paths, at any
// depth: O(paths x depth).
func ancestors(paths func(yield func(string) bool)) map[string]bool {
	out := map[string]bool{}
	for p := range paths {
		for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
			if out[p[:i]] {
				break // and every folder above it
			}
			out[p[:i]] = true
		}
	}
	return out
}

// Tree returns the tree of the shared folder ("" or ".") or of one of its
// subfolders: every servable file below it, with paths relative to it, and
// every folder below it that holds none. A folder unknown to the last scan
// is ErrNotFound; an empty one has a tree with no entries.
func (s *Store) Tree(dir string) (*Tree, error) {
	dir = strings.Trim(dir, "/")
	if dir == "." {
		dir = ""
	}
	if dir != "" {
		if err := ValidPath(dir); err != nil {
			return nil, fmt.Errorf("%s: %w", Clip(dir), ErrNotFound)
		}
	}
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	s.mu.RLock()
	t := &Tree{}
	found := dir == ""
	for name, e := range s.byName {
		if rel, ok := strings.CutPrefix(name, prefix); ok && ValidPath(rel) == nil {
			t.Entries = append(t.Entries, TreeEntry{Path: rel, Size: e.m.Size, File: e.m.ID, Executable: s.exec[name]})
			found = true
		}
	}
	for _, d := range s.emptyDirs {
		if d == dir {
			found = true
		}
		if rel, ok := strings.CutPrefix(d, prefix); ok && rel != "" {
			t.Entries = append(t.Entries, TreeEntry{Path: rel, Dir: true})
		}
	}
	s.mu.RUnlock()
	if !found {
		return nil, fmt.Errorf("folder %s: %w", Clip(dir), ErrNotFound)
	}
	// Only leaf folders are listed: one that holds a file (hashed since the
	// scan) or another folder is implied by that entry's path.
	full := ancestors(func(yield func(string) bool) {
		for _, e := range t.Entries {
			if !yield(e.Path) {
				return
			}
		}
	})
	t.Entries = slices.DeleteFunc(t.Entries, func(e TreeEntry) bool { return e.Dir && full[e.Path] })
	slices.SortFunc(t.Entries, func(a, b TreeEntry) int { return strings.Compare(a.Path, b.Path) })
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("tree of %s: %w", Clip(dir), err)
	}
	t.ID = ComputeTreeID(t)
	return t, nil
}
