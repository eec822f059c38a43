package server_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/server"
)

// runNode starts a node on lis and returns a stop function that waits for
// it to finish.
func runNode(t *testing.T, cfg server.NodeConfig) (*server.Node, func()) {
	t.Helper()
	if cfg.Listener == nil {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listener = lis
	}
	n, err := server.NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s: %v", n.Addr(), err)
			}
		}
	}
	t.Cleanup(stop)
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("node exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("node not ready after 10 s")
	}
	return n, stop
}

func registryClient(t *testing.T, addr string) shoalv1.RegistryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return shoalv1.NewRegistryServiceClient(cc)
}

func lookupName(ctx context.Context, rc shoalv1.RegistryServiceClient, name string) (*shoalv1.LookupResponse, error) {
	return rc.Lookup(ctx, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_Name{Name: name}})
}

func TestRegistryRestartHealedWithinOneLease(t *testing.T) {
	const lease = 1500 * time.Millisecond
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_, stopReg := runNode(t, server.NodeConfig{Listener: lis, Lease: server.LeaseConfig{Lease: lease}})

	dir := t.TempDir()
	writeFile(t, dir, "f", randBytes(1000))
	p, _ := runNode(t, server.NodeConfig{Dir: dir, Registries: []string{addr}})
	<-p.Announced()
	stopReg()

	announced := make(chan server.Peer, 16)
	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _ = runNode(t, server.NodeConfig{Listener: lis2, Lease: server.LeaseConfig{Lease: lease, OnAnnounce: func(p server.Peer) {
		if len(p.Files) > 0 {
			select {
			case announced <- p:
			default:
			}
		}
	}}})
	select {
	case got := <-announced:
		if got.Addr != p.Addr() {
			t.Fatalf("announce from %s, want %s", got.Addr, p.Addr())
		}
		t.Logf("healed %v after the restart", time.Since(start).Round(time.Millisecond))
	case <-time.After(lease + time.Second):
		t.Fatalf("no re-announce within one lease (%v) of the restart", lease)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := lookupName(ctx, registryClient(t, addr), "f"); err != nil {
		t.Fatalf("lookup after heal: %v", err)
	}
}

func TestLeaveOnShutdownAndBadAnnounces(t *testing.T) {
	reg, _ := runNode(t, server.NodeConfig{})
	dir := t.TempDir()
	writeFile(t, dir, "f", randBytes(1000))
	p, stopP := runNode(t, server.NodeConfig{Dir: dir, Registries: []string{reg.Addr()}})
	<-p.Announced()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc := registryClient(t, reg.Addr())
	ls, err := rc.ListFiles(ctx, &shoalv1.ListFilesRequest{})
	// The shared folder "./" (a tree of one file), then the file.
	if err != nil || len(ls.GetFiles()) != 2 || ls.GetFiles()[0].GetFile().GetName() != "./" || ls.GetFiles()[0].GetFile().GetFileCount() != 1 ||
		ls.GetFiles()[1].GetFile().GetName() != "f" || ls.GetFiles()[1].GetHolders() != 1 {
		t.Fatalf("ListFiles: %v, %v", ls, err)
	}
	stopP()
	if _, err := lookupName(ctx, rc, "f"); status.Code(err) != codes.NotFound {
		t.Fatalf("after the peer stopped: %v, want NotFound at once", err)
	}
	bad := []*shoalv1.AnnounceRequest{
		{},
		{Peer: &shoalv1.PeerInfo{PeerId: "x", Address: "nonsense"}},
		{Peer: &shoalv1.PeerInfo{PeerId: "x", Address: "127.0.0.1:5", Files: []*shoalv1.FileInfo{{ContentId: "nope"}}}},
	}
	for i, req := range bad {
		if _, err := rc.Announce(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("bad announce %d: %v, want InvalidArgument", i, err)
		}
	}
	many := &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "x", Address: "127.0.0.1:5"}}
	for range 10_001 {
		many.Peer.Files = append(many.Peer.Files, &shoalv1.FileInfo{ContentId: "sh1mcgz7wp7h7zlmsrph7gyv2vzkkzf3dbdnkgj63tkv5jpzz7gtyca", Name: "x"})
	}
	if _, err := rc.Announce(ctx, many); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("10001 files: %v, want ResourceExhausted", err)
	}
	if _, err := rc.Leave(ctx, &shoalv1.LeaveRequest{PeerId: reg.ID(), Address: "127.0.0.1:1"}); status.Code(err) != codes.NotFound {
		t.Errorf("leave for an unknown peer: %v", err)
	}
}

// BenchmarkLookupGRPC measures lookups per second over loopback gRPC
// against a registry of 10,000 peers with 10 files each, from as many
// concurrent callers as the benchmark's parallelism.
func BenchmarkLookupGRPC(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	leases := server.NewLeases(server.LeaseConfig{Lease: time.Hour, MaxPeers: 20_000})
	ids := make([]string, 1000)
	for i := range 10_000 {
		p := server.Peer{ID: fmt.Sprintf("peer-%d", i), Addr: fmt.Sprintf("10.0.%d.%d:7070", i/250, i%250+1)}
		for j := range 10 {
			f := (i + j*7919) % 1000
			id := chunkstore.ID{byte(f), byte(f >> 8), 9}
			ids[f] = id.String()
			p.Files = append(p.Files, server.FileInfo{ID: id, Name: fmt.Sprintf("file-%d", f), Size: 1 << 20})
		}
		if _, _, err := leases.Announce(p, ""); err != nil {
			b.Fatal(err)
		}
	}
	srv := server.New(server.Config{Limits: server.Limits{RequestsPerSecond: -1, StreamsPerConn: -1}}, nil, server.NewRegistryService(leases, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()
	conns := make([]*grpc.ClientConn, 4)
	for i := range conns {
		if conns[i], err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
	}
	var next atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		k := next.Add(1)
		rc := shoalv1.NewRegistryServiceClient(conns[k%int64(len(conns))])
		i := int(k)
		for pb.Next() {
			resp, err := rc.Lookup(context.Background(), &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_ContentId{ContentId: ids[i%1000]}, Limit: 5})
			if err != nil || len(resp.GetPeers()) != 5 {
				b.Errorf("lookup: %v", err)
				return
			}
			i += 7
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
}

func TestNoOneLeavesOrRefreshesForAnother(t *testing.T) {
	reg, _ := runNode(t, server.NodeConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc := registryClient(t, reg.Addr())
	victim := &shoalv1.PeerInfo{PeerId: "victim", Address: "127.0.0.1:9001", Files: []*shoalv1.FileInfo{{ContentId: chunkstore.ID{7}.String(), Name: "v"}}}
	resp, err := rc.Announce(ctx, &shoalv1.AnnounceRequest{Peer: victim})
	if err != nil || resp.GetSecret() == "" {
		t.Fatalf("announce: %v, secret %q", err, resp.GetSecret())
	}
	if _, err := rc.Leave(ctx, &shoalv1.LeaveRequest{PeerId: "victim", Address: victim.GetAddress()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("leave for another peer: %v, want PermissionDenied", err)
	}
	hijack := &shoalv1.PeerInfo{PeerId: "victim", Address: victim.GetAddress()}
	if _, err := rc.Announce(ctx, &shoalv1.AnnounceRequest{Peer: hijack, Secret: "guess"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("refresh with a wrong secret: %v, want PermissionDenied", err)
	}
	// Nor through gossip, as if from another registry: FuzzGossipMessage.
	if _, err := rc.Leave(ctx, &shoalv1.LeaveRequest{PeerId: "victim", Secret: resp.GetSecret()}); err != nil {
		t.Fatalf("the owner's leave: %v", err)
	}
}

// A folder is announced and looked up by its tree id like a file by its
// content id.
func TestLookupByTreeID(t *testing.T) {
	reg, _ := runNode(t, server.NodeConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc := registryClient(t, reg.Addr())
	tree := chunkstore.TreeID{5, 6}.String()
	peer := &shoalv1.PeerInfo{PeerId: "p", Address: "127.0.0.1:9001", Files: []*shoalv1.FileInfo{{ContentId: tree, Name: "models/", Size: 10, FileCount: 4}}}
	if _, err := rc.Announce(ctx, &shoalv1.AnnounceRequest{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []*shoalv1.LookupRequest{
		{File: &shoalv1.LookupRequest_ContentId{ContentId: tree}},
		{File: &shoalv1.LookupRequest_Name{Name: "models/"}},
	} {
		resp, err := rc.Lookup(ctx, req)
		if err != nil || len(resp.GetPeers()) != 1 || resp.GetFile().GetContentId() != tree || resp.GetFile().GetFileCount() != 4 {
			t.Fatalf("lookup %v: %v, %v", req, resp, err)
		}
	}
}
