package client

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Chunk states.
const (
	pending uint8 = iota
	inflight
	writing
	done
	reserved // for one worker's early request (see reserve)
)

// request is one open request to a peer: the chunks it asked for and how
// to stop it.
type request struct {
	worker  int
	chunks  []int
	left    int // chunks not yet written by anyone; guarded by sched.mu
	cancel  context.CancelCauseFunc
	stopped bool      // cancelled because every chunk was written elsewhere
	sent    time.Time // when it was sent, if before it was taken (see earlyReq)
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
	remaining int                // chunks not done
	queued    int                // chunks pending: not dispatched, not reserved
	avail     []int32            // peers known to hold each chunk, for rarest-first
	rnd       uint64             // xorshift state for random tie-breaks
	requests  map[int][]*request // open requests per chunk
	changed   chan struct{}      // closed and replaced on every state change
	finished  chan struct{}      // closed when remaining reaches 0
	keepDups  bool               // never cancel a request whose chunks were written elsewhere
	lens      func(i int) int    // chunk i's length, what take's budget counts; nil counts 1 a chunk
	share     bool               // a request holds at most its share of the chunks left (a folder's)
	takers    int                // workers taking requests; guarded by mu
}

// addTaker counts a worker that takes requests (delta 1) or one that
// stopped (-1).
func (s *sched) addTaker(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.takers += delta
}

// mostLocked is the most chunks one request may hold: maxTreeBatch, and
// the request's share among the workers of the chunks left (with share
// set, a folder's) or of those not yet handed out. Without the first one
// fast peer took a folder's thousand small files in one request while the
// others, with nothing left to take, copied them one request each
// (300-700 requests, not 100). Without the second the queue's last chunks
// went out in whole requests to whichever workers asked first, and the
// others, idle, could not help: a capped peer 50 ms away still had four
// chunks to send, 130 ms, when the other four were done.
func (s *sched) mostLocked() int {
	if s.takers <= 1 {
		return maxTreeBatch
	}
	left := s.queued
	if s.share {
		left = s.remaining
	}
	return max(1, min(maxTreeBatch, (left+s.takers-1)/s.takers))
}

// fits reports whether chunk i fits in what is left of a budget after
// used: the first chunk always does.
func (s *sched) fits(i int, used, budget int64) bool {
	if used == 0 {
		return true
	}
	n := int64(1)
	if s.lens != nil {
		n = int64(s.lens(i))
	}
	return used+n <= budget
}

// cost is what chunk i counts against a budget.
func (s *sched) cost(i int) int64 {
	if s.lens == nil {
		return 1
	}
	return int64(s.lens(i))
}

// left is how many chunks are not done.
func (s *sched) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remaining
}

// newSched queues the chunks of n not marked in have: in file order, or
// from the end backwards with tailFirst.
func newSched(n int, have []bool, tailFirst bool) *sched {
	s := &sched{
		state:    make([]uint8, n),
		avail:    make([]int32, n),
		rnd:      uint64(time.Now().UnixNano()) | 1,
		reqs:     make([]uint8, n),
		owner:    make([]int32, n),
		requests: map[int][]*request{},
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
		s.queued++
	}
	if tailFirst {
		slices.Reverse(s.queue)
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

// take hands worker w pending chunks within budget (bytes with lens set,
// else chunks; at least one, at most mostLocked); with none pending, one
// endgame duplicate of a chunk whose requester dupFrom allows (nil: none).
// cancel stops the returned request; accept, if set, says which chunks
// the worker's peer can serve. It returns the request to run, or nil and
// a channel that is closed when it is worth asking again.
func (s *sched) take(w int, budget int64, accept func(i int) bool, dupFrom func(owner int) bool, cancel context.CancelCauseFunc) (*request, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []int
	if accept == nil {
		got = s.takeQueuedLocked(w, budget)
	} else {
		got = s.takeRarestLocked(w, budget, accept)
	}
	if len(got) == 0 && dupFrom != nil {
		// Endgame: a second copy of the oldest chunk in flight elsewhere.
		for k := s.ohead; k < len(s.order); k++ {
			i := s.order[k]
			if s.state[i] != inflight {
				if k == s.ohead {
					s.ohead++
				}
				continue
			}
			if s.reqs[i] == 1 && s.owner[i] != int32(w) && dupFrom(int(s.owner[i])) && (accept == nil || accept(i)) {
				s.reqs[i] = 2
				got = append(got, i)
				break
			}
		}
	}
	if len(got) == 0 {
		return nil, s.changed
	}
	st := &request{worker: w, chunks: got, left: len(got), cancel: cancel}
	for _, i := range got {
		s.requests[i] = append(s.requests[i], st)
	}
	return st, nil
}

// reserve sets chunks aside for worker w, if every one is pending: a
// request for them went to w's peer before the download began (see
// earlyReq). No take hands them out; w takes them with takeThese, or
// gives them back with unreserve.
func (s *sched) reserve(w int, chunks []int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range chunks {
		if i < 0 || i >= len(s.state) || s.state[i] != pending {
			return false
		}
	}
	for _, i := range chunks {
		s.state[i], s.owner[i] = reserved, int32(w)
	}
	s.queued -= len(chunks)
	return true
}

// unreserve gives back to the queue the chunks of chunks still reserved
// for w.
func (s *sched) unreserve(w int, chunks []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range chunks {
		if s.state[i] == reserved && s.owner[i] == int32(w) {
			s.state[i] = pending
			s.queued++
			s.retry = append(s.retry, i)
		}
	}
	s.notifyLocked()
}

// takeThese hands worker w exactly chunks if every one is pending or
// reserved for w; else nil.
func (s *sched) takeThese(w int, chunks []int, cancel context.CancelCauseFunc) *request {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range chunks {
		if i < 0 || i >= len(s.state) || (s.state[i] != pending && (s.state[i] != reserved || s.owner[i] != int32(w))) {
			return nil
		}
	}
	st := &request{worker: w, chunks: chunks, left: len(chunks), cancel: cancel}
	for _, i := range chunks {
		s.dispatchLocked(w, i)
		s.requests[i] = append(s.requests[i], st)
	}
	return st
}

// takeQueuedLocked takes chunks in queue order: handed-back chunks first,
// then the file from start to end. Used for peers holding every chunk.
func (s *sched) takeQueuedLocked(w int, budget int64) []int {
	var (
		got  []int
		used int64
	)
	most := s.mostLocked()
	for len(got) < most {
		i := -1
		for len(s.retry) > 0 && i < 0 {
			if c := s.retry[len(s.retry)-1]; s.state[c] == pending {
				i = c
			} else {
				s.retry = s.retry[:len(s.retry)-1]
			}
		}
		if i >= 0 {
			if !s.fits(i, used, budget) {
				break
			}
			s.retry = s.retry[:len(s.retry)-1]
		}
		for s.qhead < len(s.queue) && i < 0 {
			if c := s.queue[s.qhead]; s.state[c] == pending {
				if !s.fits(c, used, budget) {
					return got
				}
				i = c
			}
			s.qhead++
		}
		if i < 0 {
			break
		}
		s.dispatchLocked(w, i)
		got = append(got, i)
		used += s.cost(i)
	}
	return got
}

// takeRarestLocked takes the pending chunks accept allows that the fewest
// known peers hold, at random among equals, so that downloaders of one
// swarm spread over different chunks. Used for peers holding only some
// chunks, or known to lack some.
func (s *sched) takeRarestLocked(w int, budget int64, accept func(int) bool) []int {
	type cand struct {
		i     int
		avail int32
		r     uint64
	}
	var cs []cand
	for i, st := range s.state {
		if st == pending && accept(i) {
			s.rnd ^= s.rnd << 13
			s.rnd ^= s.rnd >> 7
			s.rnd ^= s.rnd << 17
			cs = append(cs, cand{i, s.avail[i], s.rnd})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.avail != b.avail {
			return int(a.avail - b.avail)
		}
		return cmp.Compare(a.r, b.r)
	})
	var (
		got  []int
		used int64
		most = s.mostLocked()
	)
	for _, c := range cs {
		if len(got) == most || !s.fits(c.i, used, budget) {
			break
		}
		s.dispatchLocked(w, c.i)
		got = append(got, c.i)
		used += s.cost(c.i)
	}
	return got
}

// takeFrom hands a sequential source (one stream from the file's start)
// the first pending chunk at or after from. With none pending there, it
// hands a duplicate of the first chunk at or after from that exactly one
// other request has in flight: the stream passes that chunk on its way
// anyway, and when it is fast it delivers it first. The scan is linear in
// the chunks after from; sequential sources serve small files (the course
// protocol's), one chunk per take.
func (s *sched) takeFrom(w, from int, cancel context.CancelCauseFunc) (*request, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := -1
	for i := max(from, 0); i < len(s.state) && got < 0; i++ {
		if s.state[i] == pending {
			s.dispatchLocked(w, i)
			got = i
		}
	}
	for i := max(from, 0); i < len(s.state) && got < 0; i++ {
		if s.state[i] == inflight && s.reqs[i] == 1 && s.owner[i] != int32(w) {
			s.reqs[i] = 2
			got = i
		}
	}
	if got < 0 {
		return nil, s.changed
	}
	st := &request{worker: w, chunks: []int{got}, left: 1, cancel: cancel}
	s.requests[got] = append(s.requests[got], st)
	return st, nil
}

func (s *sched) dispatchLocked(w, i int) {
	if s.state[i] == pending {
		s.queued--
	}
	s.state[i], s.reqs[i], s.owner[i] = inflight, 1, int32(w)
	s.order = append(s.order, i)
}

// addAvail counts one more (delta 1) or one fewer (delta -1) peer holding
// each chunk marked in have (every chunk when have is nil), and wakes
// workers waiting for chunks their peer may now serve.
func (s *sched) addAvail(have []bool, delta int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.avail {
		if have == nil || have[i] {
			s.avail[i] += delta
		}
	}
	s.notifyLocked()
}

// addAvailOne counts one more peer holding chunk i.
func (s *sched) addAvailOne(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.avail[i]++
	s.notifyLocked()
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

// complete records chunk i as written by request by and cancels the other
// requests that no longer need to run.
func (s *sched) complete(i int, by *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[i] = done
	s.remaining--
	for _, st := range s.requests[i] {
		st.left--
		if st.left == 0 && !st.stopped && st != by && !s.keepDups {
			st.stopped = true
			st.cancel(errNotNeeded)
		}
	}
	delete(s.requests, i)
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

// release ends a request: chunks it did not deliver lose one requester and,
// with none left, go back to the front of the queue.
func (s *sched) release(st *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range st.chunks {
		if s.state[i] == done {
			continue
		}
		list := s.requests[i]
		for k, o := range list {
			if o == st {
				list = append(list[:k], list[k+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(s.requests, i)
		} else {
			s.requests[i] = list
		}
		if s.reqs[i] > 0 {
			s.reqs[i]--
		}
		if s.state[i] == inflight && s.reqs[i] == 0 {
			s.state[i] = pending
			s.queued++
			s.retry = append(s.retry, i)
		}
	}
	s.notifyLocked()
}

// chunks is the number of chunks.
func (s *sched) chunks() int { return len(s.state) }

// isDone reports whether chunk i is verified and written.
func (s *sched) isDone(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state[i] == done
}

// doneSet returns which chunks are verified and written, and a channel
// closed at the next change of state.
func (s *sched) doneSet() ([]bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	have := make([]bool, len(s.state))
	for i, st := range s.state {
		have[i] = st == done
	}
	return have, s.changed
}

// addDone marks in have the chunks written since have was taken, returns
// them, and a channel closed at the next change of state.
func (s *sched) addDone(have []bool) ([]int, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var added []int
	for i, st := range s.state {
		if st == done && !have[i] {
			have[i] = true
			added = append(added, i)
		}
	}
	return added, s.changed
}
