package server

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/shoalnet/shoal/chunkstore"
)

// superSeed reveals a seeder's chunks to each client a few at a time, each
// chunk to one client only, until every chunk has been revealed and no
// chunk has gone out for the first time for revealAllIdle (in a working
// swarm: every chunk was sent once); then it reveals everything to
// everyone. A seeder's upload is a swarm's bottleneck: this
// way it sends each chunk once and the downloaders, which serve what they
// hold, spread it. Clients learn the revealed chunks from WatchHave and are
// told the seeder is partial.
//
// Revealing everything as soon as the last chunk was revealed (not yet
// sent) let requests for chunks already out queue before the last first
// copies; revealing it once every chunk was sent made the seeder send a
// tenth of the file again while the downloaders, which could, spread the
// last chunks (bench/swarm, N=16: 1.10 F sent; 1.00 F with the wait, for 2%
// more time).
//
// A client that leaves gives back the chunks revealed to it and not sent,
// to be revealed to others. A client that never asks for a chunk revealed
// to it (it had the chunk already) holds nothing up for long: the
// reveal-all comes revealAllIdle after the last first send either way.
type superSeed struct {
	reveal int           // chunks revealed ahead to each client
	idle   time.Duration // revealAllIdle; tests shorten it

	mu    sync.Mutex
	files map[chunkstore.ID]*seedFile // guarded by mu
}

// revealAllIdle is how long a seeder whose chunks were all revealed waits
// after the last first send of a chunk before it reveals everything.
const revealAllIdle = 5 * time.Second

type seedFile struct {
	n          int
	unassigned []int                  // chunks not revealed to anyone yet, in random order
	subs       map[string]*seedClient // by client address
	sentOnce   []bool                 // chunks sent at least once
	allOut     bool                   // everything revealed to everyone
	idle       *time.Timer            // reveals everything after revealAllIdle without a first send; nil until all were revealed
}

type seedClient struct {
	have    []bool     // chunks revealed to this client
	pending int        // revealed, not yet sent to it
	wake    chan []int // newly revealed chunks; holds n+1, more than reveals can be
	done    bool       // every chunk revealed
}

func newSuperSeed(reveal int) *superSeed {
	return &superSeed{reveal: max(1, reveal), idle: revealAllIdle, files: map[chunkstore.ID]*seedFile{}}
}

func clientAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// clientIDKey is the metadata a client sends with WatchHave and GetChunks
// to be one client over several connections (see PeerService.WatchHave
// in the proto).
const clientIDKey = "shoal-client-id"

// seedClientKey names the client a super-seeder reveals to: its IP and
// its shoal-client-id, or its connection's address without one. A far
// client moves its requests to a wider connection while its have feed
// stays on the first; counted by connection, nothing it was sent was
// counted and the seeder stopped revealing to it.
func seedClientKey(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, clientIDKey); len(v) == 1 && len(v[0]) >= 1 && len(v[0]) <= 64 {
		return clientIP(ctx) + " " + v[0]
	}
	return clientAddr(ctx)
}

// subscribe registers a client of file id (n chunks) and returns what is
// revealed to it now and a channel of later reveals.
func (s *superSeed) subscribe(id chunkstore.ID, n int, addr string) ([]bool, *seedClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil {
		f = &seedFile{n: n, unassigned: rand.Perm(n), subs: map[string]*seedClient{}, sentOnce: make([]bool, n)}
		s.files[id] = f
	}
	if old := f.subs[addr]; old != nil && !f.allOut {
		// The same client again (a new feed, say): what was revealed to
		// the old feed and not sent is revealed afresh.
		s.giveBackLocked(f, old)
	}
	c := &seedClient{have: make([]bool, n), wake: make(chan []int, n+1)}
	f.subs[addr] = c
	if f.allOut {
		c.done = true
		for i := range c.have {
			c.have[i] = true
		}
	} else {
		s.revealLocked(f, c, s.reveal) // the snapshot below carries these
	}
	return append([]bool(nil), c.have...), c
}

func (s *superSeed) unsubscribe(id chunkstore.ID, addr string, c *seedClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil || f.subs[addr] != c {
		return
	}
	delete(f.subs, addr)
	if len(f.subs) == 0 && f.idle != nil {
		// No one left to reveal to (the service stopping ends every
		// feed): the next subscriber arms it again.
		f.idle.Stop()
		f.idle = nil
	}
	if f.allOut {
		return
	}
	s.giveBackLocked(f, c)
	for _, sub := range f.subs { // hand them out now, not at the next send
		if sub.pending < s.reveal {
			if added := s.revealLocked(f, sub, s.reveal-sub.pending); len(added) > 0 {
				sub.wake <- added
			}
		}
	}
}

// giveBackLocked returns the chunks revealed to c and never sent to anyone
// to the unassigned ones.
func (s *superSeed) giveBackLocked(f *seedFile, c *seedClient) {
	for i, h := range c.have {
		if h && !f.sentOnce[i] {
			f.unassigned = append(f.unassigned, i)
		}
	}
}

// revealLocked reveals up to k unassigned chunks to c and returns them.
func (s *superSeed) revealLocked(f *seedFile, c *seedClient, k int) []int {
	var added []int
	for ; k > 0 && len(f.unassigned) > 0; k-- {
		i := f.unassigned[len(f.unassigned)-1]
		f.unassigned = f.unassigned[:len(f.unassigned)-1]
		c.have[i] = true
		c.pending++
		added = append(added, i)
	}
	if len(f.unassigned) == 0 && f.idle == nil {
		f.idle = time.AfterFunc(s.idle, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.revealAllLocked(f)
		})
	}
	return added
}

// revealAllLocked reveals every chunk to every client, through their wake
// channels.
func (s *superSeed) revealAllLocked(f *seedFile) {
	if f.allOut {
		return
	}
	f.allOut = true
	if f.idle != nil {
		f.idle.Stop()
	}
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
		if len(rest) > 0 {
			sub.wake <- rest
		}
	}
}

// sent records that chunk i went to the client at addr and reveals another.
func (s *superSeed) sent(id chunkstore.ID, addr string, i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	if f == nil || f.allOut {
		return
	}
	if !f.sentOnce[i] {
		f.sentOnce[i] = true
		if f.idle != nil {
			f.idle.Reset(s.idle)
		}
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
