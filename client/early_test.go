package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/server"
)

// earlyPeer is an honest PeerService from memory that answers a manifest
// only once wait GetChunks calls have come in (or after manifestHold): it
// tells whether the client asked for chunks before it had the manifest.
type earlyPeer struct {
	shoalv1.UnimplementedPeerServiceServer
	m    *chunkstore.Manifest
	data []byte
	wait int

	asked chan struct{} // closed at the wait-th GetChunks

	mu       sync.Mutex
	early    int // GetChunks calls in before the manifest went; guarded by mu
	answered bool
	calls    int // GetChunks calls in all; guarded by mu
}

// manifestHold bounds how long the manifest waits for a GetChunks.
const manifestHold = 10 * time.Second

func newEarlyPeer(t *testing.T, data []byte, wait int) *earlyPeer {
	t.Helper()
	m, err := chunkstore.HashReaderAt(context.Background(), bytes.NewReader(data), int64(len(data)), 2)
	if err != nil {
		t.Fatal(err)
	}
	m.Name = "early.bin"
	return &earlyPeer{m: m, data: data, wait: wait, asked: make(chan struct{})}
}

func (p *earlyPeer) GetManifest(ctx context.Context, _ *shoalv1.GetManifestRequest) (*shoalv1.GetManifestResponse, error) {
	t := time.NewTimer(manifestHold)
	defer t.Stop()
	select {
	case <-p.asked:
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	p.answered = true
	p.mu.Unlock()
	return &shoalv1.GetManifestResponse{Manifest: server.ManifestToWire(p.m)}, nil
}

func (p *earlyPeer) GetChunks(req *shoalv1.GetChunksRequest, stream grpc.ServerStreamingServer[shoalv1.GetChunksResponse]) error {
	p.mu.Lock()
	p.calls++
	if !p.answered {
		p.early++
	}
	if p.calls == p.wait {
		close(p.asked)
	}
	p.mu.Unlock()
	for _, i := range req.GetIndexes() {
		if int(i) >= p.m.NumChunks() {
			return status.Errorf(codes.InvalidArgument, "no chunk %d", i)
		}
		off, n := p.m.ChunkBounds(int(i))
		if err := stream.Send(&shoalv1.GetChunksResponse{Index: i, Offset: uint64(off), Data: p.data[off : off+int64(n)]}); err != nil {
			return err
		}
	}
	return nil
}

func (p *earlyPeer) counts() (early, calls int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.early, p.calls
}

// startEarly serves an earlyPeer of 4 MiB of random bytes that answers
// its manifest after wait GetChunks calls, and announces it to the
// registry of a new cluster as holding a file of size bytes (0: its true
// size).
func startEarly(t *testing.T, wait int, size uint64) (*earlyPeer, *cluster.Cluster) {
	t.Helper()
	c, err := cluster.Start(context.Background(), cluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := newEarlyPeer(t, randomBytes(4<<20), wait)
	if size == 0 {
		size = uint64(len(p.data))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	shoalv1.RegisterPeerServiceServer(gs, p)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	rc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := shoalv1.NewRegistryServiceClient(rc).Announce(testCtx(t), &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{
		PeerId: "early", Address: lis.Addr().String(),
		Files: []*shoalv1.FileInfo{{ContentId: p.m.ID.String(), Name: p.m.Name, Size: size}},
	}}); err != nil {
		t.Fatal(err)
	}
	return p, c
}

// getEarly downloads the file of p as a CLI download does, connecting to
// the holders ahead.
func getEarly(t *testing.T, c *cluster.Cluster, p *earlyPeer, out string) (*client.Report, error) {
	t.Helper()
	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	reg := &client.Registry{Target: p.m.ID.String(), Conn: cc, Ahead: 1}
	return client.NewDownload(client.Config{Peers: 1}, reg, out).Run(testCtx(t))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// The first requests go out as soon as the holder is connected, before
// the manifest comes back: a round trip sooner. A 4 MiB file (64 chunks
// of 64 KiB) fits in the two first requests, so the whole download is
// those two calls.
func TestFirstRequestsGoBeforeTheManifest(t *testing.T) {
	p, c := startEarly(t, 2, 0)
	data := p.data
	out := filepath.Join(t.TempDir(), "early.bin")
	if _, err := getEarly(t, c, p, out); err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if early, calls := p.counts(); early != 2 || calls != 2 {
		t.Fatalf("%d GetChunks calls, %d of them before the manifest was answered; want 2 and 2", calls, early)
	}
}

// A registry that reports the wrong size makes the client guess the wrong
// chunks: it asks for them all the same, sees from the manifest that the
// guess was wrong, drops those requests and downloads as usual.
func TestWrongGuessOfTheChunksCostsNothingButTheGuess(t *testing.T) {
	p, c := startEarly(t, 1, 1<<30) // 1 MiB chunks, not 64 KiB
	data := p.data
	out := filepath.Join(t.TempDir(), "early.bin")
	rep, err := getEarly(t, c, p, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if early, calls := p.counts(); early == 0 || calls <= early {
		t.Fatalf("%d GetChunks calls, %d before the manifest; want the guesses early and the download after", calls, early)
	}
	if rep.BytesFetched != int64(len(data)) {
		t.Fatalf("fetched %d bytes, want %d: a guessed chunk was taken for another", rep.BytesFetched, len(data))
	}
}

// A resumed download already holds the first chunks: the requests sent
// for them before the manifest are dropped, and only the rest is fetched.
func TestEarlyRequestsForChunksHeldAreDropped(t *testing.T) {
	p, c := startEarly(t, 1, 0)
	data := p.data
	out := filepath.Join(t.TempDir(), "early.bin")
	part := make([]byte, len(data))
	copy(part, data[:1<<20]) // the first 16 chunks
	if err := os.WriteFile(out+".part", part, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := getEarly(t, c, p, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if rep.BytesResumed != 1<<20 || rep.BytesFetched != int64(len(data))-1<<20 {
		t.Fatalf("resumed %d and fetched %d bytes; want %d and %d", rep.BytesResumed, rep.BytesFetched, 1<<20, len(data)-1<<20)
	}
}
