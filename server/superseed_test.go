package server

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

func TestSuperSeedRevealsEachChunkToOneClient(t *testing.T) {
	const n = 12
	s := newSuperSeed(2)
	id := chunkstore.ID{1}
	addrs := []string{"a", "b", "c"}
	clients := map[string]*seedClient{}
	for _, addr := range addrs {
		_, clients[addr] = s.subscribe(id, n, addr)
	}
	// disjoint checks that no chunk is revealed to two clients and returns
	// how many chunks are revealed in all.
	disjoint := func() int {
		t.Helper()
		s.mu.Lock()
		defer s.mu.Unlock()
		seen := map[int]string{}
		for _, addr := range addrs {
			for i, h := range clients[addr].have {
				if !h {
					continue
				}
				if o, ok := seen[i]; ok {
					t.Fatalf("chunk %d revealed to %s and %s before all went out", i, o, addr)
				}
				seen[i] = addr
			}
		}
		return len(seen)
	}
	if got := disjoint(); got != 6 {
		t.Fatalf("%d chunks revealed to 3 clients at first, want 2 each", got)
	}
	// Clients fetch their revealed chunks; each fetch reveals one more.
	sentTo := map[string]map[int]bool{"a": {}, "b": {}, "c": {}}
	for round := 0; round < n; round++ {
		for _, addr := range addrs {
			c := clients[addr]
			s.mu.Lock()
			next := -1
			for i, h := range c.have {
				if h && !sentTo[addr][i] {
					next = i
					break
				}
			}
			allRevealed := len(s.files[id].unassigned) == 0
			s.mu.Unlock()
			if next < 0 {
				if allRevealed {
					continue
				}
				t.Fatalf("%s has nothing revealed to fetch", addr)
			}
			sentTo[addr][next] = true
			s.sent(id, addr, next)
			s.mu.Lock()
			allOut := s.files[id].allOut
			s.mu.Unlock()
			if !allOut {
				disjoint()
			}
		}
	}
	// Once every chunk was sent and the idle time passed, everything is
	// revealed to everyone.
	s.mu.Lock()
	if f := s.files[id]; slices.Contains(f.sentOnce, false) || f.allOut {
		t.Fatalf("sent once: %v, all revealed %v; want every chunk sent and not all revealed yet", f.sentOnce, f.allOut)
	}
	s.revealAllLocked(s.files[id]) // what the idle timer does
	s.mu.Unlock()
	for _, addr := range addrs {
		for i, h := range clients[addr].have {
			if !h {
				t.Errorf("%s: chunk %d not revealed after all went out", addr, i)
			}
		}
	}
}

// Everything is revealed only once every chunk was sent and then no first
// send came for the idle time; not when the last chunk was revealed.
func TestSuperSeedRevealsAllAfterEveryChunkWasSent(t *testing.T) {
	const n = 4
	s, id, a, b := twoClients(n)
	s.mu.Lock()
	if len(s.files[id].unassigned) != 0 {
		t.Fatal("4 chunks not all revealed to 2 clients at 2 each")
	}
	s.mu.Unlock()
	aHas := revealed(s, a)
	for _, i := range aHas {
		s.sent(id, "a", i)
	}
	s.mu.Lock()
	if s.files[id].allOut || b.done {
		t.Fatal("everything revealed while b's chunks were not sent yet")
	}
	s.files[id].idle.Reset(time.Millisecond) // the idle time passes
	s.mu.Unlock()
	select {
	case got := <-b.wake:
		if len(got) != 2 {
			t.Fatalf("b was revealed %v at the end, want a's 2 chunks", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing revealed to b after the idle time")
	}
	_, late := s.subscribe(id, n, "late")
	for i, h := range late.have {
		if !h {
			t.Fatalf("a client subscribing after the reveal-all lacks chunk %d", i)
		}
	}
}

// A client that leaves gives back what was revealed to it and not sent.
func TestSuperSeedTakesBackALeaversChunks(t *testing.T) {
	const n = 6
	s, id, a, b := twoClients(n)
	aHas := revealed(s, a)
	s.unsubscribe(id, "a", a)
	// b fetches what it is revealed until nothing is left.
	sent := map[int]bool{}
	for range n {
		s.mu.Lock()
		next := -1
		for i, h := range b.have {
			if h && !sent[i] {
				next = i
				break
			}
		}
		s.mu.Unlock()
		if next < 0 {
			break
		}
		sent[next] = true
		s.sent(id, "b", next)
	}
	for _, i := range aHas {
		if !sent[i] {
			t.Errorf("chunk %d, revealed to a which left, never reached b", i)
		}
	}
}

// twoClients is a super-seeder of an n-chunk file that never reveals all
// by itself, with clients a and b subscribed.
func twoClients(n int) (s *superSeed, id chunkstore.ID, a, b *seedClient) {
	s = newSuperSeed(2)
	s.idle = time.Hour
	id = chunkstore.ID{byte(n)}
	_, a = s.subscribe(id, n, "a")
	_, b = s.subscribe(id, n, "b")
	return s, id, a, b
}

// revealed is the chunks revealed to c.
func revealed(s *superSeed, c *seedClient) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for i, h := range c.have {
		if h {
			out = append(out, i)
		}
	}
	return out
}

// The reveal-all timer stops when the last client leaves (as every feed
// does when the service stops), and the next client arms it again.
func TestSuperSeedIdleTimerStopsWithTheLastClient(t *testing.T) {
	const n = 4 // two clients, two reveals each: all revealed, timer armed
	s, id, a, b := twoClients(n)
	armed := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.files[id].idle != nil
	}
	if !armed() {
		t.Fatal("every chunk revealed, but no reveal-all timer")
	}
	for addr, c := range map[string]*seedClient{"a": a, "b": b} {
		for _, i := range revealed(s, c) {
			s.sent(id, addr, i) // sent once: not handed back when the client leaves
		}
	}
	s.unsubscribe(id, "a", a)
	if !armed() {
		t.Fatal("timer stopped while a client is left")
	}
	s.unsubscribe(id, "b", b)
	if armed() {
		t.Fatal("timer still armed with no client left")
	}
	s.subscribe(id, n, "c")
	if !armed() {
		t.Fatal("a new client after all were revealed did not arm the timer again")
	}
}

// A client subscribing again under the same key (a new feed) gets afresh
// what was revealed to its old feed and not sent: nothing is stranded.
func TestSuperSeedResubscribeGivesBackUnsent(t *testing.T) {
	const n = 4
	s, id, a, _ := twoClients(n)
	aHas := revealed(s, a)
	_, a2 := s.subscribe(id, n, "a")
	s.unsubscribe(id, "a", a) // the old feed ending changes nothing now
	again := revealed(s, a2)
	for _, i := range aHas {
		if !slices.Contains(again, i) {
			t.Errorf("chunk %d, revealed to a's old feed and never sent, not revealed to its new one", i)
		}
	}
}

// Clients are told apart by their shoal-client-id where they send one (the
// same client over two connections is one), else by connection.
func TestSeedClientKey(t *testing.T) {
	conn := func(port int, id string) context.Context {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: port}})
		if id != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(clientIDKey, id))
		}
		return ctx
	}
	if a, b := seedClientKey(conn(1000, "x")), seedClientKey(conn(2000, "x")); a != b {
		t.Errorf("one client id over two connections: keys %q and %q", a, b)
	}
	if a, b := seedClientKey(conn(1000, "x")), seedClientKey(conn(1000, "y")); a == b {
		t.Errorf("two client ids: one key %q", a)
	}
	if a, b := seedClientKey(conn(1000, "")), seedClientKey(conn(2000, "")); a == b {
		t.Errorf("two connections without ids: one key %q", a)
	}
	if a, b := seedClientKey(conn(1000, strings.Repeat("z", 65))), seedClientKey(conn(2000, strings.Repeat("z", 65))); a == b {
		t.Errorf("an over-long id was taken: one key %q", a)
	}
}
