package server

import (
	"context"
	"math/rand/v2"
	"sync"

	"google.golang.org/grpc/peer"

	"github.com/shoalnet/shoal/chunkstore"
)

// superSeed reveals a seeder's chunks to each client a few at a time, each
// chunk to one client only, until every chunk has gone out once; then it
// reveals everything to everyone. A seeder's upload is a swarm's
// bottleneck: this way it sends each chunk once and the downloaders, which
// serve what they hold, spread it. Clients learn the revealed chunks from
// WatchHave and are told the seeder is partial.
//
// NOTES: a client that leaves with chunks revealed to it but not fetched
// holds them back from the others only until every chunk has been
// revealed once; the final reveal-all covers them.
type superSeed struct {
	reveal int // chunks revealed ahead to each client

	mu    sync.Mutex
	files map[chunkstore.ID]*seedFile // guarded by mu
}

type seedFile struct {
	n          int
	unassigned []int                  // chunks not revealed to anyone yet, in random order
	subs       map[string]*seedClient // by client address
}

type seedClient struct {
	have    []bool     // chunks revealed to this client
	pending int        // revealed, not yet sent to it
	wake    chan []int // newly revealed chunks; holds n+1, more than reveals can be
	done    bool       // every chunk revealed
}

func newSuperSeed(reveal int) *superSeed {
	return &superSeed{reveal: max(1, reveal), files: map[chunkstore.ID]*seedFile{}}
}

func clientAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// subscribe registers a client of file id (n chunks) and returns what is
// revealed to it now and a channel of later reveals.
func (s *superSeed) subscribe(id chunkstore.ID, n int, addr string) ([]bool, *seedClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil {
		f = &seedFile{n: n, unassigned: rand.Perm(n), subs: map[string]*seedClient{}}
		s.files[id] = f
	}
	c := &seedClient{have: make([]bool, n), wake: make(chan []int, n+1)}
	f.subs[addr] = c
	s.revealLocked(f, c, s.reveal) // the snapshot below carries these
	return append([]bool(nil), c.have...), c
}

func (s *superSeed) unsubscribe(id chunkstore.ID, addr string, c *seedClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[id]; f != nil && f.subs[addr] == c {
		delete(f.subs, addr)
	}
}

// revealLocked reveals k unassigned chunks to c, or everything once none
// are left, and returns what it revealed to c. Other clients learn of the
// final reveal through their wake channels.
func (s *superSeed) revealLocked(f *seedFile, c *seedClient, k int) []int {
	var added []int
	for ; k > 0 && len(f.unassigned) > 0; k-- {
		i := f.unassigned[len(f.unassigned)-1]
		f.unassigned = f.unassigned[:len(f.unassigned)-1]
		c.have[i] = true
		c.pending++
		added = append(added, i)
	}
	if len(f.unassigned) == 0 {
		for _, sub := range f.subs {
			if sub.done {
				continue
			}
			sub.done = true
			var rest []int
			for i, h := range sub.have {
				if !h {
					sub.have[i] = true
					rest = append(rest, i)
				}
			}
			if sub == c {
				added = append(added, rest...)
			} else if len(rest) > 0 {
				sub.wake <- rest
			}
		}
	}
	return added
}

// sent records that chunk i went to the client at addr and reveals another.
func (s *superSeed) sent(id chunkstore.ID, addr string, i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil {
		return
	}
	c := f.subs[addr]
	if c == nil || c.done {
		return
	}
	if c.pending > 0 {
		c.pending--
	}
	if c.pending < s.reveal {
		if added := s.revealLocked(f, c, s.reveal-c.pending); len(added) > 0 {
			c.wake <- added
		}
	}
}
