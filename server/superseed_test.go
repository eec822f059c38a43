package server

import (
	"testing"

	"github.com/shoalnet/shoal/chunkstore"
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
			allOut := len(s.files[id].unassigned) == 0
			s.mu.Unlock()
			if allOut {
				continue
			}
			if next < 0 {
				t.Fatalf("%s has nothing revealed to fetch", addr)
			}
			sentTo[addr][next] = true
			s.sent(id, addr, next)
			if len(s.files[id].unassigned) > 0 {
				disjoint()
			}
		}
	}
	// Once every chunk went out, everything is revealed to everyone.
	for _, addr := range addrs {
		for i, h := range clients[addr].have {
			if !h {
				t.Errorf("%s: chunk %d not revealed after all went out", addr, i)
			}
		}
	}
}
