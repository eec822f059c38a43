package server_test

import (
	"context"
	"crypto/rand"
	"net"
	"slices"
	"strings"
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

// within checks every 20 ms until check holds, for at most d.
func within(t *testing.T, d time.Duration, what string, check func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !check() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		<-tick.C
	}
	return time.Since(start)
}

// throughout checks every 50 ms that check holds, for d.
func throughout(t *testing.T, d time.Duration, what string, check func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(end) {
		if !check() {
			t.Fatalf("%s stopped holding after %v", what, d-time.Until(end))
		}
		<-tick.C
	}
}

// oneCall is a registry client for one call, and its closer: polls open
// and close their own connection rather than keep one per check.
func oneCall(t *testing.T, addr string) (shoalv1.RegistryServiceClient, context.Context, func()) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	return shoalv1.NewRegistryServiceClient(cc), ctx, func() { cancel(); cc.Close() }
}

// holds reports whether the registry at addr lists a live holder of name.
func holds(t *testing.T, addr, name string) bool {
	t.Helper()
	rc, ctx, done := oneCall(t, addr)
	defer done()
	resp, err := lookupName(ctx, rc, name)
	if err != nil && status.Code(err) != codes.NotFound {
		t.Fatalf("lookup at %s: %v", addr, err)
	}
	return err == nil && len(resp.GetPeers()) > 0
}

func members(t *testing.T, addr string) []*shoalv1.Member {
	t.Helper()
	rc, ctx, done := oneCall(t, addr)
	defer done()
	resp, err := rc.Members(ctx, &shoalv1.MembersRequest{})
	if err != nil {
		t.Fatalf("members of %s: %v", addr, err)
	}
	return resp.GetMembers()
}

func alive(ms []*shoalv1.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.GetAddress())
	}
	slices.Sort(out)
	return out
}

// Three registries in a line (b joins a, c joins b): c learns of a through
// b, an announce to a reaches c, and what c learned outlives a.
func TestGossipLineOfThree(t *testing.T) {
	a, stopA := runNode(t, server.NodeConfig{Federate: true})
	b, _ := runNode(t, server.NodeConfig{Join: []string{a.Addr()}})
	c, _ := runNode(t, server.NodeConfig{Join: []string{b.Addr()}})
	want := []string{a.Addr(), b.Addr(), c.Addr()}
	slices.Sort(want)
	took := within(t, 10*time.Second, "c knows all three registries", func() bool { return slices.Equal(alive(members(t, c.Addr())), want) })
	t.Logf("c joined through b knew of a after %v", took)
	if m := members(t, c.Addr()); m[0].GetAddress() != c.Addr() || !strings.Contains(m[0].GetGossipAddress(), ":") {
		t.Fatalf("Members does not list itself first with its gossip address: %v", m)
	}

	dir := t.TempDir()
	writeFile(t, dir, "shared.bin", randBytes(50_000))
	p, _ := runNode(t, server.NodeConfig{Dir: dir, Registries: []string{a.Addr()}})
	<-p.Announced()
	took = within(t, 5*time.Second, "c lists the peer announced to a", func() bool { return holds(t, c.Addr(), "shared.bin") })
	t.Logf("announce at a visible at c after %v", took)

	stopA()
	for _, reg := range []*server.Node{b, c} {
		if !holds(t, reg.Addr(), "shared.bin") {
			t.Fatalf("%s lost the entry when the registry it came from stopped", reg.Addr())
		}
	}
}

// Refreshes travel: a learned entry outlives many leases while its peer
// re-announces elsewhere, and a leave removes it everywhere at once, long
// before its lease would end.
func TestGossipRefreshesAndLeaves(t *testing.T) {
	const lease = 1500 * time.Millisecond
	lc := server.LeaseConfig{Lease: lease}
	a, _ := runNode(t, server.NodeConfig{Federate: true, Lease: lc})
	b, _ := runNode(t, server.NodeConfig{Join: []string{a.Addr()}, Lease: lc})
	dir := t.TempDir()
	writeFile(t, dir, "kept.bin", randBytes(10_000))
	p, stopP := runNode(t, server.NodeConfig{Dir: dir, Registries: []string{a.Addr()}})
	<-p.Announced()
	within(t, 5*time.Second, "b lists the peer", func() bool { return holds(t, b.Addr(), "kept.bin") })
	throughout(t, 4*lease, "b listing the peer that keeps announcing to a", func() bool { return holds(t, b.Addr(), "kept.bin") })
	stopP()
	took := within(t, lease/2, "b forgets the peer that left a", func() bool { return !holds(t, b.Addr(), "kept.bin") })
	t.Logf("leave at a reached b after %v (lease %v)", took, lease)
}

// An entry too large for a gossip packet (many files) still reaches every
// registry, over TCP.
func TestGossipLargeEntry(t *testing.T) {
	a, _ := runNode(t, server.NodeConfig{Federate: true})
	b, _ := runNode(t, server.NodeConfig{Join: []string{a.Addr()}})
	within(t, 10*time.Second, "b joined a", func() bool { return len(alive(members(t, b.Addr()))) == 2 })
	peer := &shoalv1.PeerInfo{PeerId: "big", Address: "127.0.0.1:9000"}
	for i := range 200 {
		var id chunkstore.ID
		rand.Read(id[:])
		peer.Files = append(peer.Files, &shoalv1.FileInfo{ContentId: id.String(), Name: "file-" + strings.Repeat("x", i%40) + string(rune('a'+i%26)), Size: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := registryClient(t, a.Addr()).Announce(ctx, &shoalv1.AnnounceRequest{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	last := peer.Files[len(peer.Files)-1].GetName()
	within(t, 5*time.Second, "b lists the large entry", func() bool { return holds(t, b.Addr(), last) })
}

// Registries with a token gossip only with a key; a registry holding
// another key learns nothing from them.
func TestGossipKey(t *testing.T) {
	tok := server.Config{Token: "peers"}
	if _, err := server.NewNode(server.NodeConfig{Federate: true, Server: tok, Listener: listen(t)}); err == nil || !strings.Contains(err.Error(), "gossip key") {
		t.Fatalf("a registry with a token and no gossip key started: %v", err)
	}
	key, other := make([]byte, 32), make([]byte, 32)
	rand.Read(key)
	rand.Read(other)
	a, _ := runNode(t, server.NodeConfig{Federate: true, Server: tok, Gossip: server.GossipConfig{Key: key}})
	b, _ := runNode(t, server.NodeConfig{Join: []string{a.Addr()}, Server: tok, Gossip: server.GossipConfig{Key: key}})
	c, _ := runNode(t, server.NodeConfig{Join: []string{a.Addr()}, Server: tok, Gossip: server.GossipConfig{Key: other}})
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), server.TokenDialOption("peers")}
	dir := t.TempDir()
	writeFile(t, dir, "secret.bin", randBytes(10_000))
	p, _ := runNode(t, server.NodeConfig{Dir: dir, Registries: []string{a.Addr()}, DialOptions: dial})
	<-p.Announced()
	within(t, 10*time.Second, "b, holding the key, lists the peer", func() bool { return holds(t, b.Addr(), "secret.bin") })
	if holds(t, c.Addr(), "secret.bin") || len(members(t, c.Addr())) != 1 {
		t.Fatalf("a registry with another key joined: members %v", members(t, c.Addr()))
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}
