package client_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

// fromAddr dials from the loopback address local, so that servers see
// another client IP than 127.0.0.1.
func fromAddr(local string) grpc.DialOption {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	})
}

// One client opens GetChunks streams on every peer (20 connections of 64
// streams each, each asking for the whole file) and never reads; an honest
// download from another address still completes.
func TestHoardingClientStarvesNoOne(t *testing.T) {
	f := newFixture(t, 16<<20)
	f.start(t, make([]cluster.PeerSpec, 3), nil)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	cc, err := grpc.NewClient(f.c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	m, err := (&client.Registry{Target: f.name, Conn: cc}).Manifest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &shoalv1.GetChunksRequest{ContentId: m.ID.String(), Ranges: []*shoalv1.ChunkRange{{Start: 0, End: uint32(m.NumChunks())}}}
	var (
		conns []*grpc.ClientConn
		asked int
	)
	for _, p := range f.c.Peers {
		for range 20 {
			hc, err := grpc.NewClient(p.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, hc)
			for range 64 {
				// Never read: the peer's sends block on flow control.
				if _, err := shoalv1.NewPeerServiceClient(hc).GetChunks(ctx, req); err == nil {
					asked++
				}
			}
		}
	}
	t.Cleanup(func() {
		cancel()
		for _, hc := range conns {
			hc.Close()
		}
	})
	honest, err := grpc.NewClient(f.c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), fromAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	out := filepath.Join(t.TempDir(), "out.bin")
	reg := &client.Registry{Target: f.name, Conn: honest, DialOptions: append(client.DialOptions(), fromAddr("127.0.0.2"))}
	rep, err := client.NewDownload(client.Config{}, reg, out).Run(testCtx(t))
	if err != nil {
		t.Fatalf("honest download beside %d hoarded streams: %v", asked, err)
	}
	checkFile(t, out, f.data)
	t.Logf("%d hoarding streams asked for; honest download in %.1fs from %d peers", asked, rep.Seconds, len(rep.Peers))
}
