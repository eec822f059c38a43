package client_test

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

// silentListener accepts connections and never answers: a blackhole.
func silentListener(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// 100 junk holders at a closed port and 10 at blackholes, announced beside
// 3 honest peers: every manifest phase and a whole download still succeed.
func TestJunkHoldersDoNotBreakDownloads(t *testing.T) {
	f := newFixture(t, 4<<20)
	f.start(t, make([]cluster.PeerSpec, 3), nil)
	ctx := testCtx(t)
	cc, err := grpc.NewClient(f.c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	m, err := (&client.Registry{Target: f.name, Conn: cc}).Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	rc := shoalv1.NewRegistryServiceClient(cc)
	file := []*shoalv1.FileInfo{{ContentId: m.ID.String(), Name: f.name, Size: uint64(m.Size)}}
	for i := range 110 {
		addr := closedAddr
		if i >= 100 {
			addr = silentListener(t)
		}
		if _, err := rc.Announce(ctx, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: fmt.Sprintf("junk-%d", i), Address: addr, Files: file}}); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 3 {
		start := time.Now()
		if _, err := (&client.Registry{Target: f.name, Conn: cc, CallTimeout: 2 * time.Second}).Manifest(ctx); err != nil {
			t.Fatalf("manifest phase %d among 110 junk holders: %v", k, err)
		}
		t.Logf("manifest phase %d: %v", k, time.Since(start).Round(time.Millisecond))
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	reg := &client.Registry{Target: f.name, Conn: cc, CallTimeout: 2 * time.Second}
	rep, err := client.NewDownload(client.Config{Peers: 5}, reg, out).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	t.Logf("download: %.1fs, %d peers tried", rep.Seconds, len(rep.Peers))
}
