package client_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/server"
)

// badTreeFiles serves a store's files and one tree made up by the test.
type badTreeFiles struct {
	server.StoreFiles
	t *chunkstore.Tree
}

func (b badTreeFiles) Tree(string) (*chunkstore.Tree, error) { return b.t, nil }
func (b badTreeFiles) TreeByID(id chunkstore.TreeID) (*chunkstore.Tree, error) {
	if id != b.t.ID {
		return nil, chunkstore.ErrNotFound
	}
	return b.t, nil
}

// A peer announcing a folder whose tree has a bad entry is refused with
// the entry named, and nothing is written anywhere: not at the output,
// not beside it, not where the entry points.
func TestHostileFolderWritesNothing(t *testing.T) {
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "real.txt"), []byte("real"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := scannedStore(t, src)
	real, err := st.ManifestByName("real.txt")
	if err != nil {
		t.Fatal(err)
	}
	file := func(p string) chunkstore.TreeEntry {
		return chunkstore.TreeEntry{Path: p, Size: real.Size, File: real.ID}
	}
	for name, entries := range map[string][]chunkstore.TreeEntry{
		"dot dot":         {file("../../escape.txt")},
		"absolute":        {file("/tmp/escape.txt")},
		"NUL":             {file("a\x00b")},
		"duplicate":       {file("a"), file("a")},
		"file and folder": {file("a"), file("a/b")},
		"too long a name": {file(strings.Repeat("x", 300))},
		"wrong size":      {{Path: "a", Size: real.Size + 1, File: real.ID}},
	} {
		t.Run(name, func(t *testing.T) {
			tr := &chunkstore.Tree{Entries: entries}
			tr.ID = chunkstore.ComputeTreeID(tr)
			c, err := cluster.Start(testCtx(t), cluster.Config{Peers: []cluster.PeerSpec{{
				Files: badTreeFiles{server.StoreFiles{Store: st}, tr},
				Holdings: func() []server.FileInfo {
					return []server.FileInfo{{ID: chunkstore.ID(tr.ID), Name: "evil/", Size: real.Size, Tree: true, Files: len(entries)}}
				},
			}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			base := t.TempDir()
			out := filepath.Join(base, "a", "b", "out")
			os.MkdirAll(filepath.Dir(out), 0o755)
			_, err = downloadFolder(t, testCtx(t), c.Registry.Addr(), "evil/", client.Config{}, out)
			if !errors.Is(err, client.ErrProtocol) || !strings.Contains(err.Error(), "entry") && !strings.Contains(err.Error(), "does not match the tree") {
				t.Fatalf("got %v; want a protocol error naming the entry", err)
			}
			filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					t.Errorf("%s was written", p)
				}
				return nil
			})
			if _, err := os.Stat("/tmp/escape.txt"); err == nil {
				t.Error("/tmp/escape.txt was written")
			}
		})
	}
}

// A peer that lies about a folder's chunks is dropped as corrupt; the
// folder arrives whole from the honest ones.
func TestFolderFromALiar(t *testing.T) {
	src, _ := makeTree(t, 200)
	st := scannedStore(t, src)
	holdings := server.StoreFiles{Store: st}.Holdings
	liar := hookFiles{server.StoreFiles{Store: st}, func(i int, b []byte) []byte {
		b[len(b)/2] ^= 0xff
		return b
	}}
	c, err := cluster.Start(testCtx(t), cluster.Config{Peers: []cluster.PeerSpec{
		{Files: liar, Holdings: holdings},
		{Files: server.StoreFiles{Store: st}, Holdings: holdings},
		{Files: server.StoreFiles{Store: st}, Holdings: holdings},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	out := filepath.Join(t.TempDir(), "copy")
	rep, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, out)
	for _, p := range rep.Peers {
		if p.Addr == c.Peers[0].Addr() && p.Dropped != client.DropCorrupt {
			t.Errorf("the liar %s: dropped %q, %d chunks credited", p.Addr, p.Dropped, p.Chunks)
		}
	}
}

// Symbolic links are never followed: not the output, not one planted in
// DIR.part, and the sharing peer's folder does not serve one.
func TestFolderNeverFollowsSymlinks(t *testing.T) {
	src, _ := makeTree(t, 10)
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	os.WriteFile(secret, []byte("secret"), 0o600)
	if err := os.Symlink(secret, filepath.Join(src, "link-to-secret")); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(testCtx(t), cluster.Config{Dir: src, Peers: make([]cluster.PeerSpec, 2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	base := t.TempDir()
	out := filepath.Join(base, "copy")
	// A folder of the tree planted in DIR.part as a link to elsewhere.
	os.MkdirAll(out+".part", 0o755)
	if err := os.Symlink(outside, filepath.Join(out+".part", "big")); err != nil {
		t.Fatal(err)
	}
	if _, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(out, "link-to-secret")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the peer served its symbolic link: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("written through the planted link: %d entries in %s", len(entries), outside)
	}
	os.Remove(filepath.Join(src, "link-to-secret"))
	sameTree(t, src, out)

	// An output that is a link is refused.
	link := filepath.Join(base, "link")
	os.Symlink(outside, link)
	if _, err := downloadFolder(t, testCtx(t), c.Registry.Addr(), "./", client.Config{Force: true}, link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("output through a link: %v", err)
	}
}
