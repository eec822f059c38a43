package chunkstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleTree() *Tree {
	t := &Tree{Entries: []TreeEntry{
		{Path: "bin/run.sh", Size: 10, File: ID{1}, Executable: true},
		{Path: "data/a.txt", Size: 3, File: ID{2}},
		{Path: "empty", Dir: true},
		{Path: "empty.txt", Size: 0, File: ID{3}},
		{Path: "z/deep/er/f", Size: 1 << 40, File: ID{4}},
	}}
	t.ID = ComputeTreeID(t)
	return t
}

func TestTreeRoundTrip(t *testing.T) {
	tr := sampleTree()
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := decodeTree(tr.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != tr.ID || len(got.Entries) != len(tr.Entries) {
		t.Fatalf("round trip: %+v", got)
	}
	for i := range got.Entries {
		if got.Entries[i] != tr.Entries[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got.Entries[i], tr.Entries[i])
		}
	}
	id, err := ParseTreeID(tr.ID.String())
	if err != nil || id != tr.ID || !strings.HasPrefix(tr.ID.String(), "st1") {
		t.Fatalf("tree id text %s: %v", tr.ID, err)
	}
	// A tree id and a file id never parse as each other.
	if _, err := ParseID(tr.ID.String()); err == nil {
		t.Error("a tree id parsed as a file id")
	}
	if _, err := ParseTreeID(ID{9}.String()); err == nil {
		t.Error("a file id parsed as a tree id")
	}
	// The same bytes hashed as a file id differ from the tree id.
	if ComputeID(0, 1, nil) == ID(tr.ID) {
		t.Error("domains collide")
	}
}

func TestBadTreesRefused(t *testing.T) {
	for name, entries := range map[string][]TreeEntry{
		"dot dot":            {{Path: "../etc/passwd", Size: 1}},
		"inner dot dot":      {{Path: "a/../../b", Size: 1}},
		"absolute":           {{Path: "/etc/passwd", Size: 1}},
		"NUL":                {{Path: "a\x00b", Size: 1}},
		"backslash":          {{Path: `a\..\b`, Size: 1}},
		"empty element":      {{Path: "a//b", Size: 1}},
		"duplicate":          {{Path: "a", Size: 1}, {Path: "a", Size: 1}},
		"unsorted":           {{Path: "b", Size: 1}, {Path: "a", Size: 1}},
		"file and folder":    {{Path: "a", Size: 1}, {Path: "a/b", Size: 1}},
		"file and folder 2":  {{Path: "a", Size: 1}, {Path: "a-x", Size: 1}, {Path: "a/b", Size: 1}},
		"empty folder holds": {{Path: "d", Dir: true}, {Path: "d-x", Size: 1}, {Path: "d/y", Size: 1}},
		"long element":       {{Path: strings.Repeat("x", 256), Size: 1}},
		"folder with size":   {{Path: "d", Dir: true, Size: 3}},
	} {
		tr := &Tree{Entries: entries}
		if err := tr.Validate(); !errors.Is(err, ErrBadTree) {
			t.Errorf("%s: %v, want ErrBadTree", name, err)
		}
	}
}

func FuzzDecodeTree(f *testing.F) {
	f.Add(sampleTree().Encode())
	f.Add((&Tree{Entries: []TreeEntry{{Path: "../x", Size: 1}}}).Encode())
	f.Add([]byte{0x05, 'a', '/', '.', '.', '/', 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := decodeTree(b)
		if err != nil {
			return
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("decoded an invalid tree: %v", err)
		}
		again, err := decodeTree(tr.Encode())
		if err != nil || again.ID != tr.ID {
			t.Fatalf("re-encoding changed the tree: %v", err)
		}
		for _, e := range tr.Entries {
			if strings.HasPrefix(e.Path, "/") || strings.Contains("/"+e.Path+"/", "/../") {
				t.Fatalf("path %q escapes", e.Path)
			}
		}
	})
}

func TestStoreTree(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data string, mode os.FileMode) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", "alpha", 0o644)
	write("bin/run.sh", "#!/bin/sh\n", 0o755)
	write("sub/inner/deep.txt", "deep", 0o644)
	write("sub/empty.txt", "", 0o644)
	write(".hidden/x", "no", 0o644)
	write("sub/.dot", "no", 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "sub", "nothing", "here"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "a.txt"), filepath.Join(dir, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	root, err := s.Tree("")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range root.Entries {
		p := e.Path
		if e.Dir {
			p += "/"
		}
		if e.Executable {
			p += "*"
		}
		paths = append(paths, p)
	}
	want := "a.txt bin/run.sh* sub/empty.txt sub/inner/deep.txt sub/nothing/here/"
	if got := strings.Join(paths, " "); got != want {
		t.Fatalf("root tree %q, want %q", got, want)
	}
	sub, err := s.Tree("sub")
	if err != nil || len(sub.Entries) != 3 || sub.Entries[0].Path != "empty.txt" || sub.ID == root.ID {
		t.Fatalf("subfolder tree: %+v, %v", sub, err)
	}
	if again, _ := s.Tree("sub/"); again.ID != sub.ID {
		t.Error("the same folder gave two tree ids")
	}
	for _, bad := range []string{"nope", "../x", "sub/link", ".hidden", "a.txt"} {
		if _, err := s.Tree(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Tree(%q): %v, want ErrNotFound", bad, err)
		}
	}
}

// decodeTree reads a canonical encoding (Encode's) and checks the tree it
// describes: the fuzz target builds trees from bytes with it.
func decodeTree(b []byte) (*Tree, error) {
	t := &Tree{}
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > MaxPathBytes || uint64(len(b)-k) < n+1 {
			return nil, fmt.Errorf("%w: entry %d: bad path length", ErrBadTree, len(t.Entries))
		}
		e := TreeEntry{Path: string(b[k : k+int(n)])}
		b = b[k+int(n):]
		flags := b[0]
		b = b[1:]
		if flags&^(flagDir|flagExec) != 0 {
			return nil, fmt.Errorf("%w: entry %d: unknown flags %#x", ErrBadTree, len(t.Entries), flags)
		}
		e.Dir, e.Executable = flags&flagDir != 0, flags&flagExec != 0
		if !e.Dir {
			size, k := binary.Uvarint(b)
			if k <= 0 || size > maxManifestSize || len(b)-k < HashSize {
				return nil, fmt.Errorf("%w: entry %d: bad size or id", ErrBadTree, len(t.Entries))
			}
			e.Size = int64(size)
			copy(e.File[:], b[k:k+HashSize])
			b = b[k+HashSize:]
		}
		t.Entries = append(t.Entries, e)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	t.ID = ComputeTreeID(t)
	return t, nil
}
