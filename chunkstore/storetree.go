package chunkstore

import (
	"fmt"
	"maps"
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

// TreeByID returns the tree of the shared folder or of the subfolder whose
// tree id is id. Ids are remembered per version of the folder: a miss
// computes the tree of every folder once.
func (s *Store) TreeByID(id TreeID) (*Tree, error) {
	s.treeMu.Lock()
	f, ok := s.treesLocked()[id]
	s.treeMu.Unlock()
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", id, ErrNotFound)
	}
	t, err := s.Tree(f.Dir)
	if err != nil || t.ID != id {
		return nil, fmt.Errorf("tree %s: %w", id, ErrNotFound) // the folder changed since
	}
	return t, nil
}

// Folder is one folder of the store, as its tree describes it.
type Folder struct {
	Dir   string // relative path, '/'-separated; "" for the shared folder
	Files int    // files below it
	Size  int64  // their total size, in bytes
}

// Folders returns every folder of the store by tree id, for the folder's
// current version.
func (s *Store) Folders() map[TreeID]Folder {
	s.treeMu.Lock()
	defer s.treeMu.Unlock()
	return maps.Clone(s.treesLocked())
}

// treesLocked returns treeDirs, computed again when the folder changed;
// s.treeMu must be held.
func (s *Store) treesLocked() map[TreeID]Folder {
	if v := s.version.Load(); s.treeVersion != v || s.treeDirs == nil {
		s.treeDirs, s.treeVersion = s.indexTrees(), v
	}
	return s.treeDirs
}

// indexTrees computes the tree of every folder.
func (s *Store) indexTrees() map[TreeID]Folder {
	s.mu.RLock()
	dirs := ancestors(func(yield func(string) bool) {
		for name := range s.byName {
			if !yield(name) {
				return
			}
		}
		for _, d := range s.emptyDirs {
			if !yield(d + "/x") { // the folder itself, and those above it
				return
			}
		}
	})
	s.mu.RUnlock()
	dirs[""] = true
	found := map[TreeID]Folder{}
	for d := range dirs {
		if t, err := s.Tree(d); err == nil {
			n, size := t.Files()
			found[t.ID] = Folder{Dir: d, Files: n, Size: size}
		}
	}
	return found
}
