package client_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/cluster"
)

// floodPeer is a hostile PeerService: an honest manifest, then chunks
// nobody asked for, without end.
type floodPeer struct {
	shoalv1.UnimplementedPeerServiceServer
	m *shoalv1.Manifest
}

func (p *floodPeer) GetManifest(context.Context, *shoalv1.GetManifestRequest) (*shoalv1.GetManifestResponse, error) {
	return &shoalv1.GetManifestResponse{Manifest: p.m}, nil
}

func (p *floodPeer) GetChunks(req *shoalv1.GetChunksRequest, stream grpc.ServerStreamingServer[shoalv1.GetChunksResponse]) error {
	junk := make([]byte, p.m.GetChunkSize())
	for i := uint32(0); ; i = (i + 1) % uint32(len(p.m.GetChunkHashes())) {
		if err := stream.Send(&shoalv1.GetChunksResponse{Index: i, Offset: uint64(i) * uint64(p.m.GetChunkSize()), Data: junk}); err != nil {
			return err
		}
	}
}

func TestFloodingPeerIsDropped(t *testing.T) {
	f := newFixture(t, 8<<20)
	f.start(t, []cluster.PeerSpec{{Rate: 16 << 20}, {Rate: 16 << 20}}, nil)
	ctx := testCtx(t)
	// Fetch the honest manifest to hand out, then register the flooder.
	cc, err := grpc.NewClient(f.c.Peers[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	mr, err := shoalv1.NewPeerServiceClient(cc).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: f.name}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	shoalv1.RegisterPeerServiceServer(gs, &floodPeer{m: mr.GetManifest()})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	id, _ := chunkstore.ParseID(mr.GetManifest().GetContentId())
	rc, err := grpc.NewClient(f.c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := shoalv1.NewRegistryServiceClient(rc).Announce(ctx, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{
		PeerId: "flooder", Address: lis.Addr().String(),
		Files: []*shoalv1.FileInfo{{ContentId: id.String(), Name: f.name, Size: mr.GetManifest().GetSize()}},
	}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	rep, err := f.download(t, ctx, client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	for _, p := range rep.Peers {
		if p.ID == "flooder" && (p.Chunks != 0 || !(p.Dropped == client.DropProtocol || p.Dropped == client.DropCorrupt)) {
			t.Errorf("flooder not dropped: %+v", p)
		}
	}
}

func TestLyingManifestIsRefused(t *testing.T) {
	f := newFixture(t, 1<<20)
	f.start(t, []cluster.PeerSpec{{}}, nil)
	ctx := testCtx(t)
	cc, err := grpc.NewClient(f.c.Peers[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	mr, err := shoalv1.NewPeerServiceClient(cc).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: f.name}})
	if err != nil {
		t.Fatal(err)
	}
	// The liar claims the honest content id but hands out other hashes.
	lie := mr.GetManifest()
	lie.ChunkHashes[1] = make([]byte, 32)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	shoalv1.RegisterPeerServiceServer(gs, &floodPeer{m: lie})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	f.c.Stop(f.c.Peers[0]) // the honest peer leaves: only the liar is left
	rc, err := grpc.NewClient(f.c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := shoalv1.NewRegistryServiceClient(rc).Announce(ctx, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{
		PeerId: "liar", Address: lis.Addr().String(),
		Files: []*shoalv1.FileInfo{{ContentId: lie.GetContentId(), Name: f.name, Size: lie.GetSize()}},
	}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	_, err = f.download(t, ctx, client.Config{}, out)
	if !errors.Is(err, chunkstore.ErrBadManifest) {
		t.Fatalf("download from a manifest liar: %v, want ErrBadManifest", err)
	}
	noFile(t, out)
}
