package client

import "testing"

func anyone(int) bool { return true }

func TestEndgameDuplicateOnlyForAnIdlePeer(t *testing.T) {
	s := newSched(2, nil, false)
	nop := func(error) {}
	// Worker 0 takes both chunks; the queue is empty.
	if st, _ := s.take(0, 2, nil, anyone, nop); st == nil || len(st.chunks) != 2 {
		t.Fatalf("first take: %+v", st)
	}
	// Worker 1 has another request under way: sharing its peer's upload
	// with a duplicate would slow that request down.
	if st, _ := s.take(1, 2, nil, nil, nop); st != nil {
		t.Fatalf("a busy worker got endgame duplicate %v", st.chunks)
	}
	// Idle, it takes a second copy of the oldest chunk in flight.
	st, _ := s.take(1, 2, nil, anyone, nop)
	if st == nil || len(st.chunks) != 1 || st.chunks[0] != 0 {
		t.Fatalf("an idle worker's endgame take: %+v", st)
	}
}

func TestTailFirstQueueAndSequentialTake(t *testing.T) {
	nop := func(error) {}
	s := newSched(6, []bool{false, false, true, false, false, false}, true)
	// Other sources work from the end backwards, skipping what is done.
	if st, _ := s.take(0, 2, nil, anyone, nop); st == nil || len(st.chunks) != 2 || st.chunks[0] != 5 || st.chunks[1] != 4 {
		t.Fatalf("tail-first take: %+v", st)
	}
	// A sequential source gets the first pending chunk at or after its
	// position, one at a time.
	if st, _ := s.takeFrom(1, 0, nop); st == nil || len(st.chunks) != 1 || st.chunks[0] != 0 {
		t.Fatalf("sequential take from 0: %+v", st)
	}
	if st, _ := s.takeFrom(1, 1, nop); st == nil || st.chunks[0] != 1 {
		t.Fatalf("sequential take from 1: %+v", st)
	}
	// Past the done chunk 2, chunk 3 is the last pending one.
	if st, _ := s.takeFrom(1, 2, nop); st == nil || st.chunks[0] != 3 {
		t.Fatalf("sequential take from 2: %+v", st)
	}
	// Nothing pending after 4: a duplicate of chunk 4, which worker 0
	// alone has in flight; never of a chunk before the position.
	st, _ := s.takeFrom(1, 4, nop)
	if st == nil || st.chunks[0] != 4 || s.reqs[4] != 2 {
		t.Fatalf("sequential endgame take: %+v", st)
	}
	// Chunk 5 is the last one with a single requester; after it, nothing.
	if st, _ := s.takeFrom(1, 5, nop); st == nil || st.chunks[0] != 5 {
		t.Fatalf("sequential endgame take of 5: %+v", st)
	}
	if st, wait := s.takeFrom(1, 5, nop); st != nil || wait == nil {
		t.Fatalf("a third copy of chunk 5 (%+v) or no wait channel", st)
	}
	// A source never duplicates its own request.
	s2 := newSched(1, nil, true)
	s2.takeFrom(0, 0, nop)
	if st, _ := s2.takeFrom(0, 0, nop); st != nil {
		t.Fatalf("a source got a duplicate of its own chunk: %+v", st)
	}
	if s.left() != 5 {
		t.Fatalf("left %d, want 5", s.left())
	}
}

// Beside its own request, a worker copies only the chunks of the
// requesters dupFrom names, the oldest first.
func TestEndgameCopiesOnlyFromTheNamed(t *testing.T) {
	s := newSched(4, nil, false)
	nop := func(error) {}
	s.take(0, 2, nil, nil, nop) // 0, 1
	s.take(2, 2, nil, nil, nop) // 2, 3
	slow := func(owner int) bool { return owner == 2 }
	st, _ := s.take(1, 2, nil, slow, nop)
	if st == nil || len(st.chunks) != 1 || st.chunks[0] != 2 {
		t.Fatalf("a copy from worker 2 only: %+v", st)
	}
	if st, _ := s.take(3, 2, nil, func(owner int) bool { return owner == 1 }, nop); st != nil {
		t.Fatalf("a copy of a chunk worker 1 does not own first: %+v", st)
	}
}

// A request holds at most its share among the workers taking, however
// large its budget: a folder's of the chunks left, a file's of the chunks
// not yet handed out, so that the last ones spread over every worker.
func TestRequestsHoldTheirShare(t *testing.T) {
	nop := func(error) {}
	for _, share := range []bool{true, false} {
		s := newSched(100, nil, false)
		s.lens = func(int) int { return 100 }
		s.share = share
		for range 4 {
			s.addTaker(1)
		}
		st, _ := s.take(0, 1<<30, nil, nil, nop)
		if st == nil || len(st.chunks) != 25 {
			t.Fatalf("share %v: first take of 100 chunks among 4 workers holds %d, want 25", share, len(st.chunks))
		}
		// A folder's share is of the chunks left, 100 (rarest-first takes
		// keep to it too); a file's of those not handed out yet, 75.
		want := 19
		if share {
			want = 25
		}
		st, _ = s.take(1, 1<<30, anyone, nil, nop)
		if st == nil || len(st.chunks) != want {
			t.Fatalf("share %v: second take holds %d, want %d", share, len(st.chunks), want)
		}
	}
	// The queue's last chunks go out one request each.
	s := newSched(6, nil, false)
	for range 4 {
		s.addTaker(1)
	}
	for k, want := range []int{2, 1, 1, 1, 1} {
		if st, _ := s.take(k%4, 1<<30, nil, nil, nop); st == nil || len(st.chunks) != want {
			t.Fatalf("take %d of 6 chunks among 4 workers: %+v, want %d chunks", k, st, want)
		}
	}
}
