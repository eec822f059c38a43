package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/server"
)

// memberlist's probe of a member may still wait out its probe interval
// (at most 1 s) after Shutdown returns; it ends by itself.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// startPeer serves dir on a loopback port and returns a client connection.
func startPeer(t testing.TB, dir string, cfg server.PeerConfig) (*grpc.ClientConn, *server.Server) {
	t.Helper()
	store, err := chunkstore.Open(chunkstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{}, server.NewPeerService(server.StoreFiles{Store: store}, cfg, nil), nil)
	srv.SetServing(true)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxMessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cancel()
		<-done
		store.Close()
	})
	return cc, srv
}

func writeFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fetch reads the chunks asked for and reassembles them by offset.
func fetch(ctx context.Context, pc shoalv1.PeerServiceClient, req *shoalv1.GetChunksRequest) (map[uint32][]byte, error) {
	stream, err := pc.GetChunks(ctx, req)
	if err != nil {
		return nil, err
	}
	out := map[uint32][]byte{}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out[msg.GetIndex()] = append(out[msg.GetIndex()], msg.GetData()...)
	}
}

func TestGetManifestAndChunks(t *testing.T) {
	dir := t.TempDir()
	data := randBytes(800_000)
	writeFile(t, dir, "photos/big.bin", data)
	cc, _ := startPeer(t, dir, server.PeerConfig{PieceSize: 5000})
	pc := shoalv1.NewPeerServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	byName, err := pc.GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "photos/big.bin"}})
	if err != nil {
		t.Fatal(err)
	}
	m := byName.GetManifest()
	if m.GetSize() != uint64(len(data)) || len(m.GetChunkHashes()) < 24 {
		t.Fatalf("manifest: size %d, %d chunks", m.GetSize(), len(m.GetChunkHashes()))
	}
	byID, err := pc.GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_ContentId{ContentId: m.GetContentId()}})
	if err != nil || byID.GetManifest().GetName() != "photos/big.bin" {
		t.Fatalf("by id: %v, %v", byID, err)
	}
	n := uint32(len(m.GetChunkHashes()))
	got, err := fetch(ctx, pc, &shoalv1.GetChunksRequest{
		ContentId: m.GetContentId(),
		Indexes:   []uint32{n - 1, 0},
		Ranges:    []*shoalv1.ChunkRange{{Start: 1, End: n - 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	for i := range n {
		whole = append(whole, got[i]...)
	}
	if !bytes.Equal(whole, data) {
		t.Fatal("reassembled chunks differ from the file")
	}
}

func TestBadRequestsGetStatuses(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "f", randBytes(100_000))
	outside := t.TempDir()
	writeFile(t, outside, "secret", []byte("secret"))
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	cc, _ := startPeer(t, dir, server.PeerConfig{MaxChunksPerRequest: 10})
	pc := shoalv1.NewPeerServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mr, err := pc.GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "f"}})
	if err != nil {
		t.Fatal(err)
	}
	id := mr.GetManifest().GetContentId()
	unknown := chunkstore.ID{1, 2, 3}.String()

	manifestCases := []struct {
		name string
		req  *shoalv1.GetManifestRequest
		code codes.Code
	}{
		{"empty", &shoalv1.GetManifestRequest{}, codes.InvalidArgument},
		{"empty name", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{}}, codes.InvalidArgument},
		{"unknown name", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "nope"}}, codes.NotFound},
		{"unknown id", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_ContentId{ContentId: unknown}}, codes.NotFound},
		{"bad id", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_ContentId{ContentId: "sh1zzz"}}, codes.InvalidArgument},
		{"dot dot", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "../../etc/passwd"}}, codes.NotFound},
		{"absolute", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "/etc/passwd"}}, codes.NotFound},
		{"absolute outside", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: filepath.Join(outside, "secret")}}, codes.NotFound},
		{"symlink out", &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "link"}}, codes.NotFound},
	}
	for _, c := range manifestCases {
		_, err := pc.GetManifest(ctx, c.req)
		if status.Code(err) != c.code {
			t.Errorf("GetManifest %s: %v, want %s", c.name, err, c.code)
		}
	}

	chunkCases := []struct {
		name string
		req  *shoalv1.GetChunksRequest
		code codes.Code
	}{
		{"no chunks", &shoalv1.GetChunksRequest{ContentId: id}, codes.InvalidArgument},
		{"bad id", &shoalv1.GetChunksRequest{ContentId: "../../etc/passwd", Indexes: []uint32{0}}, codes.InvalidArgument},
		{"unknown id", &shoalv1.GetChunksRequest{ContentId: unknown, Indexes: []uint32{0}}, codes.NotFound},
		{"index out of range", &shoalv1.GetChunksRequest{ContentId: id, Indexes: []uint32{7}}, codes.OutOfRange},
		{"range out of range", &shoalv1.GetChunksRequest{ContentId: id, Ranges: []*shoalv1.ChunkRange{{Start: 5, End: 9}}}, codes.OutOfRange},
		{"reversed range", &shoalv1.GetChunksRequest{ContentId: id, Ranges: []*shoalv1.ChunkRange{{Start: 3, End: 1}}}, codes.InvalidArgument},
		{"too many", &shoalv1.GetChunksRequest{ContentId: id, Indexes: make([]uint32, 11)}, codes.ResourceExhausted},
		{"huge range", &shoalv1.GetChunksRequest{ContentId: id, Ranges: []*shoalv1.ChunkRange{{Start: 0, End: 1 << 31}, {Start: 0, End: 1 << 31}}}, codes.ResourceExhausted},
	}
	for _, c := range chunkCases {
		got, err := fetch(ctx, pc, c.req)
		if status.Code(err) != c.code || len(got) != 0 {
			t.Errorf("GetChunks %s: %d chunks, %v; want none and %s", c.name, len(got), err, c.code)
		}
	}
	// Bytes that are no protobuf at all are INVALID_ARGUMENT, not
	// INTERNAL, for a unary call and a stream alike.
	garbage := &rawMessage{0xff, 0xff, 0xff, 0xff, 0x0f}
	if err := cc.Invoke(ctx, shoalv1.PeerService_GetManifest_FullMethodName, garbage, new(rawMessage), grpc.ForceCodecV2(rawCodec{})); status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed GetManifest: %v, want InvalidArgument", err)
	}
	st, err := cc.NewStream(ctx, &shoalv1.PeerService_ServiceDesc.Streams[0], shoalv1.PeerService_GetChunks_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	st.SendMsg(garbage)
	st.CloseSend()
	if err := st.RecvMsg(new(rawMessage)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed GetChunks: %v, want InvalidArgument", err)
	}
	// An oversized request message is refused by the transport limit.
	_, err = fetch(ctx, pc, &shoalv1.GetChunksRequest{ContentId: id, Indexes: make([]uint32, 5<<20)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversize message: %v, want ResourceExhausted", err)
	}
	// The server is still healthy after all of that.
	hc := healthpb.NewHealthClient(cc)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after bad requests: %v, %v", resp, err)
	}
}

func TestChangedFileIsNotServed(t *testing.T) {
	dir := t.TempDir()
	data := randBytes(200_000)
	writeFile(t, dir, "f", data)
	cc, _ := startPeer(t, dir, server.PeerConfig{})
	pc := shoalv1.NewPeerServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mr, err := pc.GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "f"}})
	if err != nil {
		t.Fatal(err)
	}
	copy(data[100:], "changed in place")
	writeFile(t, dir, "f", data)
	got, err := fetch(ctx, pc, &shoalv1.GetChunksRequest{ContentId: mr.GetManifest().GetContentId(), Indexes: []uint32{0}})
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.NotFound {
		t.Fatalf("stale chunk: %d chunks, %v; want Unavailable", len(got), err)
	}
	if len(got) != 0 {
		t.Fatal("stale bytes were sent")
	}
}

func TestThrottleSharesOneBudget(t *testing.T) {
	// Two streams on one throttled peer together take the budget of one:
	// measured as tokens, not time.
	th := server.NewThrottle(1 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := th.Wait(ctx, 1<<20); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if err := th.Wait(short, 512<<10); err == nil {
		t.Fatal("a second stream got 512 KiB at once from a drained 1 MiB/s bucket")
	}
	if server.NewThrottle(0) != nil {
		t.Fatal("rate 0 should mean unlimited")
	}
}

func TestHealthFollowsReadinessAndShutdown(t *testing.T) {
	srv := server.New(server.Config{StopTimeout: 200 * time.Millisecond}, nil, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.GRPC().Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := func(st healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		resp, err := watch.Recv()
		if err != nil || resp.GetStatus() != st {
			t.Fatalf("health: %v, %v; want %v", resp.GetStatus(), err, st)
		}
	}
	want(healthpb.HealthCheckResponse_NOT_SERVING) // not ready yet
	srv.SetServing(true)
	want(healthpb.HealthCheckResponse_SERVING)
	go srv.Stop()
	want(healthpb.HealthCheckResponse_NOT_SERVING) // shutting down
}

// rawMessage is bytes sent as they are, whatever they encode.
type rawMessage []byte

// rawCodec sends and receives rawMessages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*rawMessage))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*rawMessage) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// A client that stops reading a GetChunks stream loses its slot after
// SendTimeout, and its connection is cut: the handler and its buffers go
// too, not only the slot.
func TestStalledReaderIsCut(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "big", randBytes(16<<20))
	cfg := server.DefaultPeerConfig()
	cfg.SendTimeout = 300 * time.Millisecond
	cfg.MaxUploads = 1 // the one slot: a second call succeeds only once the first lost it
	cc, _ := startPeer(t, dir, cfg)
	pc := shoalv1.NewPeerServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mr, err := pc.GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "big"}})
	if err != nil {
		t.Fatal(err)
	}
	m := mr.GetManifest()
	all := &shoalv1.GetChunksRequest{ContentId: m.GetContentId(), Ranges: []*shoalv1.ChunkRange{{Start: 0, End: uint32(len(m.GetChunkHashes()))}}}
	stuck, err := pc.GetChunks(ctx, all) // read once, then not until the end
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stuck.Recv(); err != nil { // its call holds the one slot
		t.Fatal(err)
	}
	// Another client, on its own connection, gets the slot once the stuck
	// one lost it.
	cc2, err := grpc.NewClient(cc.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(server.MaxMessageBytes)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	var got map[uint32][]byte
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err = fetch(ctx, shoalv1.NewPeerServiceClient(cc2), &shoalv1.GetChunksRequest{ContentId: m.GetContentId(), Indexes: []uint32{0}})
		if err == nil || time.Now().After(deadline) {
			break
		}
		<-tick.C // busy: the stuck call still holds the slot
	}
	if err != nil || len(got) == 0 {
		t.Fatalf("no chunk after the stuck call's send timeout: %v", err)
	}
	// Its connection was cut: the client sees it leave the ready state.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if cc.GetState() == connectivity.Ready && !cc.WaitForStateChange(wctx, connectivity.Ready) {
		t.Fatal("the stalled client's connection was not cut")
	}
	// Reading the stuck stream now ends in an error, before the whole file.
	n := 0
	for {
		if _, err := stuck.Recv(); err != nil {
			break
		}
		n++
	}
	if n >= len(m.GetChunkHashes()) {
		t.Fatalf("the stalled stream delivered all %d chunks", n)
	}
}
