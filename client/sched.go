package client

import (
	"context"
	"sync"
)

// Chunk states.
const (
	pending uint8 = iota
	inflight
	writing
	done
)

// stream is one open request: the chunks it asked for and how to stop it.
type stream struct {
	worker  int
	chunks  []int
	left    int // chunks not yet written by anyone; guarded by sched.mu
	cancel  context.CancelCauseFunc
	stopped bool // cancelled because every chunk was written elsewhere
}

// sched is the shared chunk queue. All fields below mu are guarded by it.
type sched struct {
	mu        sync.Mutex
	state     []uint8
	reqs      []uint8 // requesters per chunk, 0 to 2
	owner     []int32 // first requester's worker id
	retry     []int   // chunks handed back, served before queue
	queue     []int   // pending chunks in order
	qhead     int
	order     []int // in-flight chunks in dispatch order, for the endgame
	ohead     int
	remaining int // chunks not done
	streams   map[int][]*stream
	changed   chan struct{} // closed and replaced on every state change
	finished  chan struct{} // closed when remaining reaches 0
}

func newSched(n int, have []bool) *sched {
	s := &sched{
		state:    make([]uint8, n),
		reqs:     make([]uint8, n),
		owner:    make([]int32, n),
		streams:  map[int][]*stream{},
		changed:  make(chan struct{}),
		finished: make(chan struct{}),
	}
	for i := range n {
		if have != nil && have[i] {
			s.state[i] = done
			continue
		}
		s.queue = append(s.queue, i)
		s.remaining++
	}
	if s.remaining == 0 {
		close(s.finished)
	}
	return s
}

// notifyLocked wakes workers waiting for work.
func (s *sched) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// take hands worker w up to max pending chunks; with none pending it hands
// one endgame duplicate. cancel stops the returned stream's request; accept,
// if set, says which chunks the worker's peer can serve. It returns the stream to run, or nil and a channel
// that is closed when it is worth asking again.
func (s *sched) take(w, max int, accept func(i int) bool, cancel context.CancelCauseFunc) (*stream, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []int
	next := func() (int, bool) {
		for len(s.retry) > 0 {
			i := s.retry[len(s.retry)-1]
			s.retry = s.retry[:len(s.retry)-1]
			if s.state[i] == pending {
				return i, true
			}
		}
		for s.qhead < len(s.queue) {
			i := s.queue[s.qhead]
			s.qhead++
			if s.state[i] == pending {
				return i, true
			}
		}
		return 0, false
	}
	var skipped []int
	for len(got) < max {
		i, ok := next()
		if !ok {
			break
		}
		if accept != nil && !accept(i) {
			skipped = append(skipped, i)
			continue
		}
		s.state[i], s.reqs[i], s.owner[i] = inflight, 1, int32(w)
		s.order = append(s.order, i)
		got = append(got, i)
	}
	s.retry = append(s.retry, skipped...)
	if len(got) == 0 {
		// Endgame: a second copy of the oldest chunk in flight elsewhere.
		for k := s.ohead; k < len(s.order); k++ {
			i := s.order[k]
			if s.state[i] != inflight {
				if k == s.ohead {
					s.ohead++
				}
				continue
			}
			if s.reqs[i] == 1 && s.owner[i] != int32(w) && (accept == nil || accept(i)) {
				s.reqs[i] = 2
				got = append(got, i)
				break
			}
		}
	}
	if len(got) == 0 {
		return nil, s.changed
	}
	st := &stream{worker: w, chunks: got, left: len(got), cancel: cancel}
	for _, i := range got {
		s.streams[i] = append(s.streams[i], st)
	}
	return st, nil
}

// claim marks chunk i as being written by the caller; false means another
// copy won (or is being written).
func (s *sched) claim(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state[i] != inflight {
		return false
	}
	s.state[i] = writing
	return true
}

// complete records chunk i as written and cancels requests that no longer
// need to run.
func (s *sched) complete(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[i] = done
	s.remaining--
	for _, st := range s.streams[i] {
		st.left--
		if st.left == 0 && !st.stopped {
			st.stopped = true
			st.cancel(errNotNeeded)
		}
	}
	delete(s.streams, i)
	if s.remaining == 0 {
		close(s.finished)
	}
	s.notifyLocked()
}

// unclaim returns a chunk whose write failed to the in-flight state.
func (s *sched) unclaim(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state[i] == writing {
		s.state[i] = inflight
	}
}

// release ends a stream: chunks it did not deliver lose one requester and,
// with none left, go back to the front of the queue.
func (s *sched) release(st *stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range st.chunks {
		if s.state[i] == done {
			continue
		}
		list := s.streams[i]
		for k, o := range list {
			if o == st {
				list = append(list[:k], list[k+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(s.streams, i)
		} else {
			s.streams[i] = list
		}
		if s.reqs[i] > 0 {
			s.reqs[i]--
		}
		if s.state[i] == inflight && s.reqs[i] == 0 {
			s.state[i] = pending
			s.retry = append(s.retry, i)
		}
	}
	s.notifyLocked()
}
