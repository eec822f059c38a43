package client_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/server"
)

// treeFiles serves one made-up tree and no file.
type treeFiles struct {
	bigFiles
	t *chunkstore.Tree
}

func (f treeFiles) Tree(string) (*chunkstore.Tree, error) { return f.t, nil }
func (f treeFiles) TreeByID(id chunkstore.TreeID) (*chunkstore.Tree, error) {
	if id != f.t.ID {
		return nil, chunkstore.ErrNotFound
	}
	return f.t, nil
}

// dialPeer connects as shoal's client does: its message limit included.
func dialPeer(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, client.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// A peer serves the tree of its shared folder and of each subfolder, by
// path and by id.
func TestFetchTreeFromAFolder(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"a.txt": "a", "sub/b.txt": "bb", "sub/deeper/c.txt": "ccc"} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := cluster.Start(testCtx(t), cluster.Config{Dir: dir, Peers: make([]cluster.PeerSpec, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cc := dialPeer(t, c.Peers[0].Addr())
	root, err := client.FetchTree(testCtx(t), cc, nil, "")
	if err != nil || len(root.Entries) != 3 {
		t.Fatalf("root tree: %+v, %v", root, err)
	}
	sub, err := client.FetchTree(testCtx(t), cc, nil, "sub")
	if err != nil || len(sub.Entries) != 2 || sub.Entries[0].Path != "b.txt" {
		t.Fatalf("subfolder tree: %+v, %v", sub, err)
	}
	byID, err := client.FetchTree(testCtx(t), cc, &sub.ID, "")
	if err != nil || byID.ID != sub.ID {
		t.Fatalf("tree by id: %v", err)
	}
	if _, err := client.FetchTree(testCtx(t), cc, nil, "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("unknown folder: %v", err)
	}
}

// A tree of 100,000 entries arrives in pages, none over the client's
// message limit, and so does one of long paths (1000 paths of 3 KB would
// be 3 MB in one message).
func TestFetchHugeTree(t *testing.T) {
	long := strings.Repeat("n", 250) + "/" + strings.Repeat("m", 250) + "/"
	for _, c := range []struct {
		n    int
		path func(i int) string
	}{
		{100_000, func(i int) string { return fmt.Sprintf("d%03d/file-%06d.bin", i/1000, i) }},
		{2_000, func(i int) string { return fmt.Sprintf("%s%s%s%s%s%s%06d", long, long, long, long, long, long, i) }},
	} {
		tr := &chunkstore.Tree{}
		for i := range c.n {
			tr.Entries = append(tr.Entries, chunkstore.TreeEntry{Path: c.path(i), Size: int64(i), File: chunkstore.ID{byte(i), byte(i >> 8)}})
		}
		tr.ID = chunkstore.ComputeTreeID(tr)
		cl, err := cluster.Start(testCtx(t), cluster.Config{Peers: []cluster.PeerSpec{{Files: treeFiles{t: tr}, Holdings: func() []server.FileInfo { return nil }}}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := client.FetchTree(testCtx(t), dialPeer(t, cl.Peers[0].Addr()), &tr.ID, "")
		cl.Close()
		if err != nil || len(got.Entries) != c.n {
			t.Fatalf("%d entries: %v", c.n, err)
		}
	}
}

// hostileTreePeer sends a tree with the entries it is given, under the id
// they hash to (so only the entries' checks can refuse them).
type hostileTreePeer struct {
	shoalv1.UnimplementedPeerServiceServer
	entries []*shoalv1.TreeEntry
}

func (p *hostileTreePeer) GetTree(_ *shoalv1.GetTreeRequest, stream grpc.ServerStreamingServer[shoalv1.GetTreeResponse]) error {
	t := &chunkstore.Tree{}
	for _, w := range p.entries {
		e, _ := client.TreeEntryFromWire(w)
		t.Entries = append(t.Entries, e)
	}
	return stream.Send(&shoalv1.GetTreeResponse{TreeId: chunkstore.ComputeTreeID(t).String(), EntryCount: uint64(len(p.entries)), Entries: p.entries})
}

// A hostile peer's tree with any bad entry is refused, naming the entry.
func TestHostileTreesRefused(t *testing.T) {
	id := chunkstore.ID{1}.String()
	file := func(p string) *shoalv1.TreeEntry { return &shoalv1.TreeEntry{Path: p, Size: 1, ContentId: id} }
	for name, entries := range map[string][]*shoalv1.TreeEntry{
		"dot dot":         {file("../../.bashrc")},
		"absolute":        {file("/etc/passwd")},
		"NUL":             {file("a\x00b")},
		"duplicate":       {file("a"), file("a")},
		"file and folder": {file("a"), file("a/b")},
		"long name":       {file(strings.Repeat("x", 300))},
		"folder with id":  {{Path: "d", Dir: true, ContentId: id}},
	} {
		t.Run(name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := grpc.NewServer()
			shoalv1.RegisterPeerServiceServer(s, &hostileTreePeer{entries: entries})
			go s.Serve(lis)
			t.Cleanup(s.Stop)
			_, err = client.FetchTree(testCtx(t), dialPeer(t, lis.Addr().String()), nil, "")
			if !errors.Is(err, client.ErrProtocol) || !strings.Contains(err.Error(), "entry") {
				t.Errorf("got %v; want a protocol error naming the entry", err)
			}
		})
	}
}
