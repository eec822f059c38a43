package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// errNotNeeded cancels a request whose chunks were all written from
// another peer; it is not the peer's fault.
var errNotNeeded = errors.New("chunks already written")

// maxBackoffs is how many back-offs in a row (busy, rehashing) a peer gets
// before it is dropped: with the default backoffs, about 10 s of waiting.
const maxBackoffs = 6

// peerState is one peer's worker and its tallies.
type peerState struct {
	src     Source
	id      int
	bytes   atomic.Int64
	chunks  atomic.Int64
	rate    atomic.Int64 // measured bytes per second, 0 until known
	delay   atomic.Int64 // shortest round trip measured, in ns; 0 until known
	window  atomic.Int32 // the wide window the peer was moved to; 0 if none
	dropped DropReason   // set once when dropped; guarded by Download.mu
	dropErr string       // the error that dropped it; guarded by Download.mu
	early   []*earlyReq  // the peer's early requests, their chunks reserved (see sched.reserve)

	retire   context.CancelFunc // stops the worker at once, without blaming the peer
	retiring atomic.Bool        // the worker stops after its requests under way

	hmu      sync.Mutex
	have     []bool       // chunks a partial peer holds; nil for a complete peer; guarded by hmu
	lacks    []bool       // chunks the peer said it does not hold; nil until one; guarded by hmu
	backoffs atomic.Int32 // back-offs in a row; written under hmu, read without it
	pause    time.Time    // no new request before this; guarded by hmu
}

// acceptFunc reports which chunks p can serve; nil means every chunk.
func (p *peerState) acceptFunc() func(int) bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if p.have == nil && p.lacks == nil {
		return nil
	}
	return func(i int) bool {
		p.hmu.Lock()
		defer p.hmu.Unlock()
		return (p.have == nil || p.have[i]) && (p.lacks == nil || !p.lacks[i])
	}
}

// markLacking records that p does not hold chunk i of n.
func (p *peerState) markLacking(i, n int) {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if p.lacks == nil {
		p.lacks = make([]bool, n)
	}
	p.lacks[i] = true
}

// backOff pauses p's new requests, twice as long as the last time, within
// [lo, hi]; false means p was backed off maxBackoffs times in a row.
func (p *peerState) backOff(lo, hi time.Duration) bool {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	n := p.backoffs.Add(1)
	if n > maxBackoffs {
		return false
	}
	wait := lo << (n - 1)
	if wait > hi || wait <= 0 {
		wait = hi
	}
	p.pause = time.Now().Add(wait)
	return true
}

// delivered ends a run of back-offs. Called per chunk: it only reads an
// atomic unless a run is under way.
func (p *peerState) delivered() {
	if p.backoffs.Load() != 0 {
		p.backoffs.Store(0)
	}
}

// pausedFor is how long p's next request must wait.
func (p *peerState) pausedFor() time.Duration {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	return time.Until(p.pause)
}

// work runs one peer: StreamsPerPeer requests at a time, each taking a
// batch from the shared queue, until the file is done or the peer fails.
// What a failed request means for the peer is decide's call.
func (d *Download) work(ctx context.Context, p *peerState) error {
	s := d.s
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		werr    error
	)
	// A peer that lies or breaks the protocol loses every request at once.
	// Any other failure (a refused connect, a reset stream) only stops new
	// requests: the ones under way may still deliver what the peer read
	// for them.
	stopping := make(chan struct{})
	fail := func(err error) {
		errOnce.Do(func() {
			werr = err
			// Why the peer is dropped, recorded here alone and at the
			// failure, while the download runs: recorded when the worker
			// returned, a download that finished in between lost it.
			if ctx.Err() == nil {
				if v, reason := decide(err); v != endDownload {
					d.drop(p, reason, err)
				}
			}
			if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrDisk) {
				cancel(err)
			}
			close(stopping)
		})
	}
	n := d.lay.chunks()
	if hs, ok := p.src.(HaveSource); ok && hs.Partial() {
		stop := d.followHave(ctx, p, hs, n, fail)
		defer stop()
	} else {
		s.addAvail(nil, 1)
		defer s.addAvail(nil, -1)
	}
	s.addTaker(1)
	defer s.addTaker(-1)
	defer func() {
		for _, e := range p.early {
			s.unreserve(p.id, e.chunks) // those no request took
		}
	}()
	slots := make(chan struct{}, d.cfg.StreamsPerPeer)
	defer wg.Wait()
	if pr, ok := p.src.(prober); ok {
		pctx, stopProbe := context.WithCancel(ctx)
		defer stopProbe() // before wg.Wait: a probe never holds up the end
		wg.Go(func() { d.probe(pctx, p, pr) })
	}
	end := func() error {
		wg.Wait()
		return werr
	}
	nextEarly := 0 // p.early[nextEarly:] are to be taken up
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return end()
		case <-stopping:
			return end()
		}
		if p.retiring.Load() || isClosed(stopping) {
			<-slots
			return end()
		}
		if wait := p.pausedFor(); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
			case <-stopping:
			}
			t.Stop()
			if ctx.Err() != nil || isClosed(stopping) {
				<-slots
				return end()
			}
		}
		sctx, scancel := context.WithCancelCause(ctx)
		var req *request
		for req == nil && nextEarly < len(p.early) {
			// A request under way since before the manifest came.
			e := p.early[nextEarly]
			nextEarly++
			if req = s.takeThese(p.id, e.chunks, scancel); req != nil {
				_, req.sent = e.want()
			} else {
				e.drop()
			}
		}
		for req == nil {
			var wait <-chan struct{}
			accept := p.acceptFunc()
			if accept == nil && d.cfg.RarestFirst {
				accept = func(int) bool { return true }
			}
			if seq, ok := p.src.(SequentialSource); ok {
				seq.Left(s.left())
				req, wait = s.takeFrom(p.id, seq.Next(), scancel)
			} else {
				req, wait = s.take(p.id, d.batchBytes(p), accept, d.dupFrom(p, len(slots) == 1), scancel)
			}
			if req != nil {
				break
			}
			select {
			case <-wait:
				continue
			case <-s.finished:
			case <-ctx.Done():
			case <-stopping:
			}
			scancel(nil)
			<-slots
			return end()
		}
		d.inflight.Add(1)
		free := sync.OnceFunc(func() { <-slots })
		wg.Go(func() {
			err := d.fetch(sctx, p, req, free)
			scancel(nil)
			d.inflight.Add(-1)
			// What the failure means for the peer is settled before its
			// slot frees, so the loop never starts a request on a peer
			// that just failed or must back off.
			if err != nil && !errors.Is(err, errNotNeeded) && ctx.Err() == nil {
				d.mu.Lock()
				d.retries++
				d.mu.Unlock()
				switch v, _ := decide(err); v {
				case retryChunk:
				case backOff:
					if !p.backOff(d.cfg.MinBackoff, d.cfg.MaxBackoff) {
						fail(err)
					}
				default:
					fail(err)
				}
			}
			// The slot frees before release wakes the scheduler's waiters:
			// this peer's other request may then take an endgame duplicate.
			free()
			s.release(req)
		})
	}
}

// dupFrom says whose chunks p may take endgame copies of: anyone's when p
// has no other request under way (idle); beside one, only those of a peer
// sending at under a third of p's rate. A far peer waits a round trip for
// its own last request to end before it is idle, and a slow peer's last
// chunks were left to the very end (BenchmarkDownloadFarCapped); equal
// peers copying each other beside their own requests only halved each
// other's upload.
func (d *Download) dupFrom(p *peerState, idle bool) func(owner int) bool {
	if idle {
		return func(int) bool { return true }
	}
	r := p.rate.Load()
	if r == 0 {
		return nil
	}
	d.mu.Lock()
	var slow []int
	for _, q := range d.peers {
		if qr := q.rate.Load(); q != p && qr > 0 && 3*qr < r {
			slow = append(slow, q.id)
		}
	}
	d.mu.Unlock()
	if len(slow) == 0 {
		return nil
	}
	return func(owner int) bool { return slices.Contains(slow, owner) }
}

// isClosed reports whether c is closed.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// followHave follows a partial peer's have feed into p.have and the
// scheduler's availability counts; the returned function stops it.
func (d *Download) followHave(ctx context.Context, p *peerState, hs HaveSource, n int, fail func(error)) func() {
	s := d.s
	p.hmu.Lock()
	p.have = make([]bool, n)
	p.hmu.Unlock()
	hctx, hcancel := context.WithCancel(ctx)
	var hwg sync.WaitGroup
	hwg.Go(func() {
		err := hs.WatchHave(hctx, func(have []bool, added []int) {
			p.hmu.Lock()
			if have != nil && len(have) == n {
				copy(p.have, have)
			}
			for _, i := range added {
				if i >= 0 && i < n {
					p.have[i] = true
				}
			}
			p.hmu.Unlock()
			if have != nil {
				s.addAvail(have, 1)
			}
			for _, i := range added {
				if i >= 0 && i < n {
					s.addAvailOne(i)
				}
			}
		})
		if err != nil && hctx.Err() == nil {
			fail(fmt.Errorf("%s: have feed: %w", p.src.Addr(), err))
		}
	})
	return func() {
		hcancel()
		hwg.Wait()
		p.hmu.Lock()
		have := slices.Clone(p.have)
		p.hmu.Unlock()
		s.addAvail(have, -1)
	}
}

// batchUnit is the least a chunk counts for in a peer's rate, and a
// folder's in the cap on a request: below it, each request's own cost
// outweighs its bytes, so a tree's small files go many to a request.
// Measured in their bytes alone, a request of small files (a few KiB in
// the tens of milliseconds a busy machine takes) sized the next for one
// or two files.
const batchUnit = 64 << 10

// batchBytes is how many bytes of chunks a request to p should hold:
// BatchTarget of work at p's measured rate, plus what p sends in two of
// its round trips (see probe); before a rate is known, two of the largest
// chunks, at least firstBatch within MaxBatch. At most MaxBatch chunks
// (for a folder, each counted as at least batchUnit), or the two round
// trips' worth if more. Counted in bytes, a request holds a few of a large
// file's chunks or many small files (up to maxTreeBatch chunks).
//
// The round-trip term keeps a peer far away busy: with a round trip of 100 ms,
// a peer sending 400 MB/s idles unless 40 MB more are asked for before a
// request ends (a 512 MiB download from one such peer: 2.3 s with it, 3.1
// s without).
func (d *Download) batchBytes(p *peerState) int64 {
	most := int64(max(1, d.lay.most))
	if len(d.lay.files) > 1 {
		most = max(most, batchUnit)
	}
	rate := p.rate.Load()
	if rate == 0 {
		return max(2*most, min(firstBatch, int64(d.cfg.MaxBatch)*most))
	}
	ahead := rate * 2 * p.delay.Load() / int64(time.Second)
	n := rate*int64(d.cfg.BatchTarget)/int64(time.Second) + ahead
	return max(1, min(n, max(int64(d.cfg.MaxBatch)*most, ahead)))
}

// rateOf is a peer's sending rate from a request that delivered got bytes
// in el: the peer's round trip (up to half of el) is taken off, since no
// byte can come back before it. Without that a far peer's small first
// requests measured mostly the distance, and each request asked for a
// few times the last one: a request's worth per round trip, slowly.
func rateOf(got int64, el, delay time.Duration) int64 {
	el -= min(delay, el/2)
	return int64(float64(got) / el.Seconds())
}

// rateSoFar is a peer's rate from a request under way that delivered got
// bytes in el, once that says more than its distance: after 20 ms, and
// after two of its round trips. Each request of a far peer used to reset
// the peer's rate with its first chunk (1 MiB 136 ms after a request to
// a peer 120 ms away: 15 MB/s by rateOf), and the peer's other request,
// sized by it, came out a fraction of what the link carried.
func rateSoFar(got int64, el, delay time.Duration) (int64, bool) {
	if el <= max(20*time.Millisecond, 2*delay) {
		return 0, false
	}
	return rateOf(got, el, delay), true
}

// tailFree reports whether a far peer's request with left bytes to come
// at rate per second ends within about a round trip (delay): its slot is
// then freed for the peer's next request, whose first byte is a round trip
// away. Without it a far peer's two requests, sent half a request apart,
// were sent interleaved and ended close together, and the link idled a
// round trip at each pair's end (a 512 MiB download from one peer 100 ms
// away ran at 0.43 of curl's rate). Near peers are left alone: their next
// request costs no round trip to speak of, and a third stream only pushes
// more ahead of a busy client.
func tailFree(left, rate int64, delay time.Duration) bool {
	if delay <= widenAfter || rate <= 0 {
		return false
	}
	return left <= int64(float64(rate)*tailRoundTrips*delay.Seconds())
}

// tailRoundTrips is how many round trips ahead of a far request's end the
// peer's next request is sent.
const tailRoundTrips = 1.5

// firstBatch is the least a request holds before the peer's rate is
// known: two chunks of a small file are a few KiB, and a far peer would
// spend its first round trips on them.
const firstBatch = 256 << 10

// prober is a source whose round trip can be timed and whose connection
// can be given wider flow-control windows (a gRPC Peer).
type prober interface {
	RoundTrip(ctx context.Context) (time.Duration, error)
	SetWindow(window int32) bool
	// connectTime is how long its connection took to connect, 0 if
	// unknown.
	connectTime() time.Duration
}

// nearConnect is the connect time below which a peer is near whatever its
// health checks say. A connect takes about two round trips across a
// network (TCP's, then the server's HTTP/2 settings), but only the one-way
// delay behind a local proxy that delays each way (toxiproxy: the settings
// come back through it): under half of widenAfter is near either way.
const nearConnect = widenAfter / 2

// Round trips timed per peer, the shortest kept; the pause between two,
// and the longest wait for one.
const (
	probes       = 3
	probeGap     = 50 * time.Millisecond
	probeTimeout = 5 * time.Second
)

// probe times p's round trip, alongside its first requests: the shortest
// so far sets p.delay, which requests cover, and a peer farther than
// widenAfter is moved to a connection with a wide window (at once: a far
// peer is held to 40 MB/s until then), and back if a later round trip is
// shorter. Timing the first chunk of a request instead misleads: on a busy
// loopback it waited 20 to 125 ms behind the connection's other stream.
// Even health checks took 5 to 31 ms there (5 peers and the client on 2
// cores), hence a few, apart.
//
// A peer whose connection took longer than widenAfter to connect is
// widened before its first round trip is timed: that took a round trip
// or more already. One that connected within nearConnect is never widened
// by its health checks, which a busy client times behind its own work: five
// local peers on two cores measured 40-140 ms, and widened, pushed ahead
// of the client until it took 3.9-4.8 s for 1 GiB and over 100 MiB,
// against 2.6-2.8 s and 75-84 MiB unwidened.
func (d *Download) probe(ctx context.Context, p *peerState, pr prober) {
	var best time.Duration
	wide := false
	// widen moves p to a wide window (far) or back; false if it cannot.
	widen := func(far bool) bool {
		window := int32(0)
		if far {
			window = windowFor(d.cfg.Peers)
		}
		if !pr.SetWindow(window) {
			return false
		}
		p.window.Store(window)
		wide = far
		return true
	}
	connected := pr.connectTime()
	if connected > widenAfter {
		widen(true)
	}
	for k := range probes {
		if k > 0 {
			t := time.NewTimer(probeGap)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		cctx, cancel := context.WithTimeout(ctx, probeTimeout)
		rtt, err := pr.RoundTrip(cctx)
		cancel()
		if err != nil {
			return // no health service, or the peer is failing: its requests will tell
		}
		if best == 0 || rtt < best {
			best = rtt
		}
		if connected == 0 {
			// Timed alongside the first requests; known by now, as a
			// round trip has come back over the connection.
			if connected = pr.connectTime(); connected > widenAfter && !wide && !widen(true) {
				return
			}
		}
		if connected > 0 && connected <= nearConnect && best > widenAfter {
			// Connected fast, before any data flowed: the round trip
			// is the peer's queue, not its distance.
			continue
		}
		p.delay.Store(int64(best))
		if far := best > widenAfter; far != wide && !widen(far) {
			return
		}
	}
}

// fetch runs one request, verifying and writing each chunk it delivers.
// A chunk the peer says it does not hold yet is marked so, and the error
// returned for decide. A far peer's request calls free once what is left
// of it would arrive within about a round trip (see tailFree), so that
// the peer's next request is under way before this one ends.
func (d *Download) fetch(ctx context.Context, p *peerState, req *request, free func()) error {
	lay, s, o := d.lay, d.s, d.o
	stall := time.AfterFunc(d.cfg.StallTimeout, func() {
		req.cancel(fmt.Errorf("%w: no chunk for %v", ErrStalled, d.cfg.StallTimeout))
	})
	defer stall.Stop()
	asked := make(map[int]bool, len(req.chunks))
	for _, i := range req.chunks {
		asked[i] = true
	}
	started := time.Now()
	if !req.sent.IsZero() {
		started = req.sent // sent before the manifest came
	}
	var (
		got       int64
		work      int64 // got with each chunk counted as at least batchUnit: what rates count
		left      = lay.bytesOf(req.chunks)
		firstAt   time.Time // when the first chunk came
		firstSize int64
	)
	err := p.src.Fetch(ctx, req.chunks, func(i int, pieces [][]byte) error {
		stall.Reset(d.cfg.StallTimeout)
		if !asked[i] {
			return fmt.Errorf("%w: chunk %d was not asked for", ErrProtocol, i)
		}
		delete(asked, i)
		size := 0
		for _, b := range pieces {
			size += len(b)
		}
		if err := lay.verify(i, pieces); err != nil {
			return fmt.Errorf("%w from %s", err, p.src.Addr())
		}
		if d.limit != nil {
			// Our own limit is no stall of the peer's.
			stall.Stop()
			if err := d.limit.WaitN(ctx, size); err != nil {
				return err
			}
			stall.Reset(d.cfg.StallTimeout)
		}
		got += int64(size)
		work += int64(max(size, batchUnit))
		left -= int64(size)
		now := time.Now()
		if r, ok := rateSoFar(work, now.Sub(started), time.Duration(p.delay.Load())); ok {
			p.rate.Store(r)
		}
		if firstAt.IsZero() {
			firstAt, firstSize = now, int64(size)
		} else if el := now.Sub(firstAt); el >= 20*time.Millisecond {
			if tailFree(left, int64(float64(got-firstSize)/el.Seconds()), time.Duration(p.delay.Load())) {
				free()
			}
		}
		p.delivered()
		if !s.claim(i) {
			d.dup.Add(int64(size))
			return nil
		}
		if err := o.writeChunk(i, pieces); err != nil {
			s.unclaim(i)
			return fmt.Errorf("%w: %w", ErrDisk, err)
		}
		s.complete(i, req)
		p.bytes.Add(int64(size))
		p.chunks.Add(1)
		d.fetched.Add(int64(size))
		d.done.Add(int64(size))
		return nil
	})
	if el := time.Since(started); el > 20*time.Millisecond && err == nil {
		p.rate.Store(rateOf(work, el, time.Duration(p.delay.Load())))
	}
	if cause := context.Cause(ctx); cause != nil && (errors.Is(cause, errNotNeeded) || errors.Is(cause, ErrStalled)) {
		if errors.Is(cause, errNotNeeded) {
			return nil
		}
		return fmt.Errorf("%s: %w", p.src.Addr(), cause)
	}
	if err != nil {
		if errors.Is(err, ErrDisk) {
			return err
		}
		if errors.Is(err, ErrChunkNotHeld) {
			// Not a fault: the peer is never asked for that chunk again.
			for _, i := range req.chunks {
				if asked[i] {
					p.markLacking(i, lay.chunks())
					break
				}
			}
		}
		return fmt.Errorf("%s: %w", p.src.Addr(), err)
	}
	if len(asked) > 0 {
		return fmt.Errorf("%w: %s ended a request %d chunks short", ErrProtocol, p.src.Addr(), len(asked))
	}
	return nil
}
