package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// A request to a peer far away asks for what it sends over two of its
// round trips, past MaxBatch; a near peer's stays within MaxBatch.
func TestBatchCoversTheRoundTrip(t *testing.T) {
	const chunk, chunks = 1 << 20, 1024
	hashes := make([][]byte, chunks)
	for i := range hashes {
		hashes[i] = make([]byte, 32)
	}
	m, err := chunkstore.NewManifest("f", chunks*chunk, chunk, hashes)
	if err != nil {
		t.Fatal(err)
	}
	d := &Download{cfg: Config{}.withDefaults(), lay: fileLayout(m)}
	const rate = 400e6
	var far, near peerState
	far.rate.Store(rate)
	far.delay.Store(int64(100 * time.Millisecond))
	near.rate.Store(rate)
	near.delay.Store(int64(200 * time.Microsecond))

	if got, want := d.batchBytes(&far), int64(rate*0.2); got != want {
		t.Errorf("far peer: a request of %d bytes, want %d (rate x 2 round trips)", got, want)
	}
	if got, want := d.batchBytes(&near), int64(d.cfg.MaxBatch*chunk); got != want {
		t.Errorf("near peer: a request of %d bytes, want MaxBatch's %d", got, want)
	}
}

// A far peer's wide window: 64 MiB for one peer alone (40 MB go out over a
// round trip of 100 ms at 400 MB/s), a fifth of it for each of five, never
// less than 4 MiB.
func TestWindowsShareABudget(t *testing.T) {
	for _, tc := range []struct {
		peers int
		want  int32
	}{{1, 64 << 20}, {5, 64 << 20 / 5}, {16, 4 << 20}, {64, 4 << 20}} {
		if got := windowFor(tc.peers); got != tc.want {
			t.Errorf("%d peers: window %d, want %d", tc.peers, got, tc.want)
		}
	}
}

// fakeProber answers round trips after rtt, or when the probe stops, and
// records the windows it is given.
type fakeProber struct {
	connected, rtt time.Duration
	later          time.Duration // the connect time once a round trip came back, if connected is 0
	windows        chan int32
	trips          atomic.Int32
}

func (f *fakeProber) connectTime() time.Duration {
	if f.connected == 0 && f.trips.Load() > 0 {
		return f.later
	}
	return f.connected
}

func (f *fakeProber) SetWindow(w int32) bool {
	f.windows <- w
	return true
}

func (f *fakeProber) RoundTrip(ctx context.Context) (time.Duration, error) {
	t := time.NewTimer(f.rtt)
	defer t.Stop()
	select {
	case <-t.C:
		f.trips.Add(1)
		return f.rtt, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// A peer whose connection took longer than widenAfter to connect is
// widened before its first round trip is timed; a round trip found short
// moves it back.
func TestSlowConnectWidensAtOnce(t *testing.T) {
	d := &Download{cfg: Config{Peers: 5}.withDefaults()}
	var p peerState
	pr := &fakeProber{connected: 2 * widenAfter, rtt: time.Hour, windows: make(chan int32, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.probe(ctx, &p, pr) }()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	select {
	case w := <-pr.windows:
		if w != windowFor(5) {
			t.Errorf("widened to %d, want %d", w, windowFor(5))
		}
	case <-timeout.C:
		t.Error("not widened before its first round trip came back")
	}
	cancel() // the first round trip never comes back
	<-done
	if got := p.window.Load(); got != windowFor(5) {
		t.Errorf("peer's window %d, want %d", got, windowFor(5))
	}

	// A round trip found short narrows it again.
	var q peerState
	pr = &fakeProber{connected: 2 * widenAfter, rtt: time.Millisecond, windows: make(chan int32, 4)}
	d.probe(context.Background(), &q, pr)
	close(pr.windows)
	var got []int32
	for w := range pr.windows {
		got = append(got, w)
	}
	if len(got) != 2 || got[0] != windowFor(5) || got[1] != 0 {
		t.Errorf("windows set %v, want [%d 0]: wide at once, narrow after a 1 ms round trip", got, windowFor(5))
	}
}

// A request's rate leaves out the peer's round trip, at most half the
// request's time: a far peer's first small requests measure its sending,
// not its distance.
func TestRateLeavesOutTheRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		got       int64
		el, delay time.Duration
		want      int64
	}{
		{100 << 20, time.Second, 0, 100 << 20},                                           // near: all of the time
		{90 << 20, time.Second, 100 * time.Millisecond, 100 << 20},                       // far: the round trip left out
		{1 << 20, 120 * time.Millisecond, 100 * time.Millisecond, (1 << 20) * 1000 / 60}, // at most half the time
	} {
		if got := rateOf(tc.got, tc.el, tc.delay); got != tc.want {
			t.Errorf("%d bytes in %v, %v away: rate %d, want %d", tc.got, tc.el, tc.delay, got, tc.want)
		}
	}
}

// Before a peer's rate is known a request holds two chunks, and at least
// firstBatch: a small file's 16 KiB chunks would cost a far peer round
// trips for a few KiB each.
func TestFirstRequestHoldsAtLeastFirstBatch(t *testing.T) {
	for _, tc := range []struct {
		chunk, chunks int
		want          int64
	}{{16 << 10, 64, firstBatch}, {1 << 20, 64, 2 << 20}} {
		hashes := make([][]byte, tc.chunks)
		for i := range hashes {
			hashes[i] = make([]byte, 32)
		}
		m, err := chunkstore.NewManifest("f", uint64(tc.chunk*tc.chunks), uint32(tc.chunk), hashes)
		if err != nil {
			t.Fatal(err)
		}
		d := &Download{cfg: Config{}.withDefaults(), lay: fileLayout(m)}
		if got := d.batchBytes(&peerState{}); got != tc.want {
			t.Errorf("chunks of %d bytes, no rate yet: a request of %d bytes, want %d", tc.chunk, got, tc.want)
		}
	}
}

// A peer that connected fast is never widened by slow health checks: on a
// busy machine they time the client's own queue, not the distance; nor is
// one whose connect time, taken alongside its first requests, is known
// fast by its first round trip. A peer whose connect time stays unknown
// still is.
func TestFastConnectIsNeverWidenedByHealthChecks(t *testing.T) {
	d := &Download{cfg: Config{Peers: 5}.withDefaults()}
	for _, tc := range []struct {
		connected, later time.Duration
		wide             bool
	}{
		{time.Millisecond, 0, false},
		{0, time.Millisecond, false},
		{0, 0, true},
		{0, 2 * widenAfter, true},
		// Behind a proxy 40 ms each way a connect takes the one way only:
		// the health checks decide.
		{nearConnect + time.Millisecond, 0, true},
	} {
		var p peerState
		pr := &fakeProber{connected: tc.connected, later: tc.later, rtt: 2 * widenAfter, windows: make(chan int32, 4)}
		d.probe(context.Background(), &p, pr)
		close(pr.windows)
		var got []int32
		for w := range pr.windows {
			got = append(got, w)
		}
		if wide := len(got) > 0; wide != tc.wide {
			t.Errorf("connected in %v (later %v), round trips of %v: windows set %v; want widened: %v", tc.connected, tc.later, pr.rtt, got, tc.wide)
		}
		if far := time.Duration(p.delay.Load()) > widenAfter; far != tc.wide {
			t.Errorf("connected in %v (later %v): delay %v; want far: %v", tc.connected, tc.later, time.Duration(p.delay.Load()), tc.wide)
		}
	}
}
