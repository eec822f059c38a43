package certs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/client"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/certs"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/server"
)

func mustDial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestMutualTLSAndToken(t *testing.T) {
	files, err := certs.Generate(t.TempDir(), []string{"127.0.0.1", "localhost"}, []string{"node", "client"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvOpt, err := files["node"].ServerOption()
	if err != nil {
		t.Fatal(err)
	}
	nodeDial, err := files["node"].DialOption()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "secret.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	const token = "s3cret-token"
	c, err := cluster.Start(context.Background(), cluster.Config{
		Dir: dir, Peers: make([]cluster.PeerSpec, 3), Token: token,
		ServerOptions: []grpc.ServerOption{srvOpt}, DialOptions: []grpc.DialOption{nodeDial},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A client with a certificate from the CA downloads.
	withCert, err := files["client"].DialOption()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	reg := &client.Registry{Target: "secret.bin", Conn: mustDial(t, c.Registry.Addr(), withCert), DialOptions: []grpc.DialOption{withCert}}
	if _, err := client.NewDownload(client.Config{}, reg, out).Run(ctx); err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("file differs")
	}

	// One that trusts the CA but has no certificate is refused.
	noCert, err := certs.Files{CA: files["client"].CA}.DialOption()
	if err != nil {
		t.Fatal(err)
	}
	_, err = shoalv1.NewRegistryServiceClient(mustDial(t, c.Registry.Addr(), noCert)).ListFiles(ctx, &shoalv1.ListFilesRequest{})
	if code := status.Code(err); code != codes.Unavailable && code != codes.Unauthenticated {
		t.Fatalf("client without a certificate: %v, want Unavailable or Unauthenticated", err)
	}
	_, err = shoalv1.NewPeerServiceClient(mustDial(t, c.Peers[0].Addr(), noCert)).GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "secret.bin"}})
	if code := status.Code(err); code != codes.Unavailable && code != codes.Unauthenticated {
		t.Fatalf("peer download without a certificate: %v", err)
	}

	// With a certificate but the wrong token, no announce.
	rc := shoalv1.NewRegistryServiceClient(mustDial(t, c.Registry.Addr(), withCert, server.TokenDialOption("guess")))
	_, err = rc.Announce(ctx, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "intruder", Address: "127.0.0.1:9"}})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("announce with a wrong token: %v, want Unauthenticated", err)
	}
	rc = shoalv1.NewRegistryServiceClient(mustDial(t, c.Registry.Addr(), withCert))
	if _, err := rc.Announce(ctx, &shoalv1.AnnounceRequest{Peer: &shoalv1.PeerInfo{PeerId: "intruder", Address: "127.0.0.1:9"}}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("announce without a token: %v, want Unauthenticated", err)
	}
	// Lookups need no token.
	if ls, err := rc.ListFiles(ctx, &shoalv1.ListFilesRequest{Prefix: "secret"}); err != nil || len(ls.GetFiles()) != 1 || ls.GetFiles()[0].GetHolders() != 3 {
		t.Fatalf("ListFiles: %v, %v", ls, err)
	}
}
