package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalnet/shoal/chunkstore"
)

// A folder of more files than a registry takes in one announce is still
// announced: every folder, and the shallowest files that fit.
func TestHoldingsOfAFolderOverTheAnnounceLimit(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "top.txt"), []byte("top"), 0o644)
	for k := range maxAnnounced + 50 {
		p := filepath.Join(dir, "data", fmt.Sprintf("d%03d", k/100), fmt.Sprintf("f%05d", k))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st, err := chunkstore.Open(chunkstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := StoreFiles{Store: st}.Holdings()
	folders, top := 0, false
	for _, f := range h {
		if f.Tree {
			folders++
		}
		top = top || f.Name == "top.txt"
	}
	if len(h) != maxAnnounced || folders != 1+1+101 || !top {
		t.Fatalf("%d entries, %d folders, top.txt announced %v; want %d entries with all 103 folders and top.txt", len(h), folders, top, maxAnnounced)
	}
	l := NewLeases(LeaseConfig{})
	if _, _, err := l.Announce(Peer{ID: "p", Addr: "127.0.0.1:1", Files: h}, ""); err != nil {
		t.Fatalf("announce: %v", err)
	}
	if _, peers, _, err := l.Lookup(chunkstore.ID{}, "data/", true, 1, nil); err != nil || len(peers) != 1 || !strings.HasPrefix(peers[0].Addr, "127.0.0.1") {
		t.Fatalf("lookup of data/: %v", err)
	}
}
