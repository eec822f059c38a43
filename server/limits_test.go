package server_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/server"
)

// serveLimited serves dir with the given limits and returns its address.
func serveLimited(t *testing.T, dir string, limits server.Limits, pc server.PeerConfig) string {
	t.Helper()
	store, err := chunkstore.Open(chunkstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{Limits: limits}, server.NewPeerService(server.StoreFiles{Store: store}, pc, nil), nil)
	srv.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	return lis.Addr().String()
}

// dialFrom connects to addr from a chosen loopback source IP, so that one
// test can be several clients.
func dialFrom(t *testing.T, addr, fromIP string) *grpc.ClientConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func manifestByName(ctx context.Context, cc *grpc.ClientConn, name string) error {
	_, err := shoalv1.NewPeerServiceClient(cc).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: name}})
	return err
}

func TestRequestRatePerClientIP(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "f", randBytes(1000))
	addr := serveLimited(t, dir, server.Limits{RequestsPerSecond: 5, StreamsPerConn: -1, MaxClients: 100}, server.DefaultPeerConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	greedy, polite := dialFrom(t, addr, "127.0.0.1"), dialFrom(t, addr, "127.0.0.2")
	refused := 0
	for range 20 {
		if err := manifestByName(ctx, greedy, "f"); status.Code(err) == codes.ResourceExhausted {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused < 10 {
		t.Fatalf("%d of 20 back-to-back calls refused at 5 per second, want most", refused)
	}
	if err := manifestByName(ctx, polite, "f"); err != nil {
		t.Fatalf("another client was refused too: %v", err)
	}
	if _, err := healthpb.NewHealthClient(greedy).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health is exempt, got %v", err)
	}
}

func TestStreamsPerConnection(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "f", randBytes(1000))
	addr := serveLimited(t, dir, server.Limits{RequestsPerSecond: -1, StreamsPerConn: 2}, server.DefaultPeerConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b := dialFrom(t, addr, "127.0.0.1"), dialFrom(t, addr, "127.0.0.1")
	m, err := shoalv1.NewPeerServiceClient(a).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "f"}})
	if err != nil {
		t.Fatal(err)
	}
	// Two long-lived streams fill connection a.
	for range 2 {
		w, err := shoalv1.NewPeerServiceClient(a).WatchHave(ctx, &shoalv1.WatchHaveRequest{ContentId: m.GetManifest().GetContentId()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if err := manifestByName(ctx, a, "f"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third call on a full connection: %v, want ResourceExhausted", err)
	}
	if err := manifestByName(ctx, b, "f"); err != nil {
		t.Fatalf("another connection was refused too: %v", err)
	}
}

func TestConcurrentUploads(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "f", randBytes(4<<20))
	pc := server.DefaultPeerConfig()
	pc.MaxUploads = 1
	pc.Throttle = server.NewThrottle(256 << 10) // the first upload takes seconds
	addr := serveLimited(t, dir, server.Limits{RequestsPerSecond: -1, StreamsPerConn: -1}, pc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, second := dialFrom(t, addr, "127.0.0.1"), dialFrom(t, addr, "127.0.0.2")
	m, err := shoalv1.NewPeerServiceClient(first).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "f"}})
	if err != nil {
		t.Fatal(err)
	}
	id := m.GetManifest().GetContentId()
	long, err := shoalv1.NewPeerServiceClient(first).GetChunks(ctx, &shoalv1.GetChunksRequest{ContentId: id, Ranges: []*shoalv1.ChunkRange{{Start: 0, End: 64}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := long.Recv(); err != nil { // the upload is under way
		t.Fatal(err)
	}
	_, err = fetch(ctx, shoalv1.NewPeerServiceClient(second), &shoalv1.GetChunksRequest{ContentId: id, Indexes: []uint32{0}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second upload: %v, want ResourceExhausted", err)
	}
	if err := manifestByName(ctx, second, "f"); err != nil {
		t.Fatalf("the refused client cannot even get a manifest: %v", err)
	}
}
