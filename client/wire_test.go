package client_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/server"
)

// The server's ManifestToWire and the client's ManifestFromWire are
// inverses.
func TestManifestWireRoundTrip(t *testing.T) {
	_, m := testFile(33)
	got, err := client.ManifestFromWire(server.ManifestToWire(m))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(m.ID); err != nil || got.Name != m.Name || !slices.Equal(got.Hashes, m.Hashes) {
		t.Fatalf("round trip: %v", err)
	}
}

// bigFiles serves the manifest of one file too large to hash in a test:
// its chunk hashes are made up, and no chunk is ever read.
type bigFiles struct{ m *chunkstore.Manifest }

func (b bigFiles) Manifest(id chunkstore.ID) (*chunkstore.Manifest, error) {
	if id != b.m.ID {
		return nil, chunkstore.ErrNotFound
	}
	return b.m, nil
}
func (b bigFiles) ManifestByName(string) (*chunkstore.Manifest, error) { return b.m, nil }
func (b bigFiles) OpenChunks(chunkstore.ID) (server.ChunkReader, error) {
	return nil, fmt.Errorf("never read: %w", chunkstore.ErrNotFound)
}
func (b bigFiles) WatchHave(context.Context, chunkstore.ID, func([]bool, []int, bool) error) error {
	return chunkstore.ErrNotFound
}

// The manifest of a 100 GiB file (102,400 chunk hashes, 3.5 MB) is served
// and fetched: past the one-chunk message limit, within the limit its size
// implies.
func TestManifestOf100GiB(t *testing.T) {
	const size = 100 << 30
	m := &chunkstore.Manifest{Name: "disk.img", Size: size, ChunkSize: chunkstore.ChunkSizeFor(size)}
	m.Hashes = make([]chunkstore.Hash, size/int64(m.ChunkSize))
	for i := range m.Hashes {
		m.Hashes[i] = chunkstore.Hash{byte(i), byte(i >> 8), byte(i >> 16)}
	}
	m.ID = chunkstore.ComputeID(m.Size, m.ChunkSize, m.Hashes)
	files := bigFiles{m}
	c, err := cluster.Start(testCtx(t), cluster.Config{Peers: []cluster.PeerSpec{{
		Files: files, Holdings: func() []server.FileInfo { return []server.FileInfo{{ID: m.ID, Name: m.Name, Size: m.Size}} },
	}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	got, err := (&client.Registry{Target: m.ID.String(), Conn: cc}).Manifest(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != size || len(got.Hashes) != 102_400 || got.ID != m.ID {
		t.Fatalf("got %d bytes in %d chunks, id %s", got.Size, len(got.Hashes), got.ID)
	}
}
