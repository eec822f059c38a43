package client

import "testing"

func TestEndgameDuplicateOnlyForAnIdlePeer(t *testing.T) {
	s := newSched(2, nil)
	nop := func(error) {}
	// Worker 0 takes both chunks; the queue is empty.
	if st, _ := s.take(0, 2, nil, true, nop); st == nil || len(st.chunks) != 2 {
		t.Fatalf("first take: %+v", st)
	}
	// Worker 1 has another request under way: sharing its peer's upload
	// with a duplicate would slow that request down.
	if st, _ := s.take(1, 2, nil, false, nop); st != nil {
		t.Fatalf("a busy worker got endgame duplicate %v", st.chunks)
	}
	// Idle, it takes a second copy of the oldest chunk in flight.
	st, _ := s.take(1, 2, nil, true, nop)
	if st == nil || len(st.chunks) != 1 || st.chunks[0] != 0 {
		t.Fatalf("an idle worker's endgame take: %+v", st)
	}
}
