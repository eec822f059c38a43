package server_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/server"
)

// A listing of any length arrives whole, one page at a time: two announces
// of 10,000 files each (over 2 MiB of entries, past the message limit of
// one response).
func TestListFilesPages(t *testing.T) {
	leases := server.NewLeases(server.LeaseConfig{Lease: time.Hour})
	for p := range 2 {
		peer := server.Peer{ID: fmt.Sprintf("peer-%d", p), Addr: fmt.Sprintf("10.0.0.%d:7070", p+1)}
		for i := range 10_000 {
			id := chunkstore.ID{byte(p), byte(i), byte(i >> 8)}
			name := fmt.Sprintf("%s/file-%05d-%d", strings.Repeat("long-folder-name", 6), i, p)
			peer.Files = append(peer.Files, server.FileInfo{ID: id, Name: name, Size: 1 << 20})
		}
		if _, _, err := leases.Announce(peer, ""); err != nil {
			t.Fatal(err)
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{}, nil, server.NewRegistryService(leases, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	files, err := client.ListFiles(ctx, cc, "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 20_000 {
		t.Fatalf("listed %d files, want 20000", len(files))
	}
	if !slices.IsSortedFunc(files, func(a, b client.ListedFile) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("listing not sorted by name")
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.ID] {
			t.Fatalf("%s listed twice", f.Name)
		}
		seen[f.ID] = true
	}
}
