package client

import (
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Chunks reserved for a worker's early request are handed to no other
// take; the worker takes them, or gives them back to the front of the
// queue.
func TestReservedChunksWaitForTheirWorker(t *testing.T) {
	nop := func(error) {}
	s := newSched(6, []bool{false, true, false, false, false, false}, false)
	if s.reserve(0, []int{1, 2}) {
		t.Fatal("reserved chunk 1, which is done")
	}
	if !s.reserve(0, []int{2, 3}) || s.reserve(1, []int{3, 4}) {
		t.Fatal("reserving 2-3 for worker 0 failed, or 3 was reserved twice")
	}
	if !s.reserve(1, []int{4}) {
		t.Fatal("reserving 4 for worker 1 failed")
	}
	// Another worker's take skips the reserved chunks.
	if st, _ := s.take(2, 6, nil, nil, nop); st == nil || !slices.Equal(st.chunks, []int{0, 5}) {
		t.Fatalf("take beside reservations: %+v", st)
	}
	if st := s.takeThese(1, []int{2, 3}, nop); st != nil {
		t.Fatal("worker 1 took worker 0's reservation")
	}
	if st := s.takeThese(0, []int{2, 3}, nop); st == nil || st.left != 2 || s.state[2] != inflight {
		t.Fatalf("worker 0 taking its reservation: %+v", st)
	}
	// Worker 1 leaves without taking chunk 4: it is queued again.
	s.unreserve(1, []int{4})
	if st, _ := s.take(2, 6, nil, nil, nop); st == nil || !slices.Equal(st.chunks, []int{4}) {
		t.Fatalf("take after unreserve: %+v", st)
	}
}

// Each holder gets its early requests of the file's first chunks, as
// predicted from the size; partial holders get none.
func TestEarlyPlan(t *testing.T) {
	full := &shoalv1.PeerInfo{}
	part := &shoalv1.PeerInfo{Files: []*shoalv1.FileInfo{{Partial: true}}}
	// 512 MiB: 1 MiB chunks, two a request.
	plan := earlyPlan(&shoalv1.FileInfo{Size: 512 << 20}, []*shoalv1.PeerInfo{full, part, full})
	var got [][]int
	for k, reqs := range plan {
		for _, e := range reqs {
			if e.chunkSize != 1<<20 {
				t.Fatalf("chunk size %d, want 1 MiB", e.chunkSize)
			}
			got = append(got, append([]int{k}, e.chunks...))
		}
	}
	want := [][]int{{0, 0, 1}, {0, 2, 3}, {2, 4, 5}, {2, 6, 7}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("plan (holder, chunks...) %v, want %v", got, want)
	}
	// 3 MiB: 48 chunks of 64 KiB, 32 a request: the first holder's two
	// requests cover the file, the others get none.
	plan = earlyPlan(&shoalv1.FileInfo{Size: 3 << 20}, []*shoalv1.PeerInfo{full, full})
	if len(plan[0]) != 2 || len(plan[0][0].chunks) != 32 || len(plan[0][1].chunks) != 16 || plan[0][1].chunks[15] != 47 || len(plan[1]) != 0 {
		t.Fatalf("plan for 3 MiB: %d, %d requests", len(plan[0]), len(plan[1]))
	}
}

// A connect slower than widenAfter dials the wide connection at once;
// widening then takes it instead of dialing; a peer closed before
// widening closes it.
func TestSlowConnectDialsItsWideConnectionAhead(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	go gs.Serve(lis)
	defer gs.Stop()
	r := &Registry{Ahead: 4}
	info := &shoalv1.PeerInfo{PeerId: "p", Address: lis.Addr().String()}
	dial := func() *warmPeer {
		cc, err := grpc.NewClient(info.GetAddress(), r.dialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		return r.newWarm(info, cc)
	}

	near := dial()
	near.connected(widenAfter / 2)
	if near.spare.cc != nil {
		t.Fatal("a near peer got a wide connection")
	}
	near.close()

	far := dial()
	far.connected(2 * widenAfter)
	spare := far.spare.cc
	if spare == nil || far.spare.window != windowFor(4) {
		t.Fatalf("far peer: spare %v, window %d; want one of %d", spare, far.spare.window, windowFor(4))
	}
	p := r.peer(info, far.cc, nil, far)
	if !p.SetWindow(windowFor(4)) || p.conn() != spare {
		t.Fatal("widening did not take the connection dialed ahead")
	}
	p.Close()
	if s := spare.GetState(); s != connectivity.Shutdown {
		t.Fatalf("the taken connection is %v after Close", s)
	}

	other := dial()
	other.connected(2 * widenAfter)
	spare = other.spare.cc
	p = r.peer(info, other.cc, nil, other)
	p.Close()
	if s := spare.GetState(); s != connectivity.Shutdown {
		t.Fatalf("an untaken wide connection is %v after its peer closed", s)
	}
	if p.SetWindow(windowFor(4)) {
		t.Fatal("a closed peer was widened")
	}
}
