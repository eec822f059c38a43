package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// errNotNeeded cancels a request whose chunks were all written from
// another peer; it is not the peer's fault.
var errNotNeeded = errors.New("chunks already written")

// Download fetches one file. Build it with NewDownload, run it once with
// Run; Progress may be called from any goroutine meanwhile.
type Download struct {
	cfg  Config
	disc Discoverer
	out  string

	start   time.Time
	size    atomic.Int64
	done    atomic.Int64 // bytes written, resumed included
	fetched atomic.Int64 // bytes fetched and written in this run
	dup     atomic.Int64 // bytes fetched but not needed
	active  atomic.Int32 // peers working

	mu      sync.Mutex
	peers   []*peerState // every peer tried, in order; guarded by mu
	retries int          // chunk requests handed back; guarded by mu

	ready chan struct{}        // closed once m, s and o are set
	m     *chunkstore.Manifest // the file; set before ready
	s     *sched               // the chunk states; set before ready
	o     *output              // the part file; set before ready
}

// peerState is one peer's worker and its tallies.
type peerState struct {
	src     Source
	id      int
	bytes   atomic.Int64
	chunks  atomic.Int64
	rate    atomic.Int64 // measured bytes per second, 0 until known
	dropped string       // set once when dropped; guarded by Download.mu

	retire   context.CancelFunc // stops the worker at once, without blaming the peer
	retiring atomic.Bool        // the worker stops after its requests under way

	hmu   sync.Mutex
	have  []bool // chunks a partial peer holds; nil for a complete peer; guarded by hmu
	lacks []bool // chunks the peer said it does not hold; nil until one; guarded by hmu
}

// accept reports whether p can serve chunk i; nil means every chunk.
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

// NewDownload prepares a download of the file disc describes to out.
func NewDownload(cfg Config, disc Discoverer, out string) *Download {
	return &Download{cfg: cfg.withDefaults(), disc: disc, out: out, ready: make(chan struct{})}
}

// Progress returns a snapshot of the download.
func (d *Download) Progress() Progress {
	var el time.Duration
	if !d.start.IsZero() {
		el = time.Since(d.start)
	}
	return Progress{Size: d.size.Load(), Done: d.done.Load(), Fetched: d.fetched.Load(), ActivePeers: int(d.active.Load()), Elapsed: el}
}

// Run downloads the file. On success the verified file is at out; on
// failure nothing is at out and out.part keeps what was verified.
func (d *Download) Run(ctx context.Context) (*Report, error) {
	d.start = time.Now()
	m, err := d.disc.Manifest(ctx)
	if err != nil {
		return nil, err
	}
	d.size.Store(m.Size)
	rep := &Report{Name: m.Name, Size: m.Size, Output: d.out}
	if len(m.Hashes) > 0 {
		rep.ContentID = m.ID.String()
	}
	o, err := openOutput(ctx, d.out, m, d.cfg)
	if err != nil {
		return nil, err
	}
	if o.already {
		rep.AlreadyDone = true
		d.done.Store(m.Size)
		return d.finish(rep), nil
	}
	if !d.cfg.Serve {
		defer o.close()
	}
	d.done.Store(o.resumed)
	rep.BytesResumed = o.resumed

	s := newSched(chunkCount(m), o.have, d.cfg.TailFirst)
	s.keepDups = d.cfg.FinishDuplicates
	d.m, d.s, d.o = m, s, o
	close(d.ready)
	if s.remaining > 0 {
		if err := d.pool(ctx, m, s, o); err != nil {
			return d.finish(rep), err
		}
	}
	if err := o.commit(ctx); err != nil {
		return d.finish(rep), err
	}
	return d.finish(rep), nil
}

// chunkCount is the number of chunks of m, hashed or not.
func chunkCount(m *chunkstore.Manifest) int {
	if len(m.Hashes) > 0 {
		return len(m.Hashes)
	}
	return int((m.Size + int64(m.ChunkSize) - 1) / int64(m.ChunkSize))
}

func (d *Download) finish(rep *Report) *Report {
	rep.elapsed = time.Since(d.start)
	rep.Seconds = rep.elapsed.Seconds()
	rep.BytesFetched = d.fetched.Load()
	rep.DuplicateBytes = d.dup.Load()
	if rep.Seconds > 0 {
		rep.MBPerSecond = float64(rep.BytesFetched) / 1e6 / rep.Seconds
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	rep.Retries = d.retries
	for _, p := range d.peers {
		rep.Peers = append(rep.Peers, PeerReport{ID: p.src.ID(), Addr: p.src.Addr(), Bytes: p.bytes.Load(), Chunks: int(p.chunks.Load()), Dropped: p.dropped})
	}
	return rep
}

// pool keeps up to cfg.Peers workers running until every chunk is written.
func (d *Download) pool(ctx context.Context, m *chunkstore.Manifest, s *sched, o *output) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		p   *peerState
		err error
	}
	results := make(chan result)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	tried := map[string]bool{}
	exclude := slices.Clone(d.cfg.Exclude)
	for _, id := range exclude {
		tried[id] = true
	}
	active := 0
	backoff := d.cfg.MinBackoff
	lastWorking := time.Now()
	var fatal error
	var discoverErr error

	var spare []Source // found by a replacement, started once a slot frees
	defer func() {
		for _, src := range spare {
			src.Close()
		}
	}()
	discover := func() {
		select {
		case <-s.finished:
			return // never a new connection once the file is complete
		default:
		}
		if active >= d.cfg.Peers {
			return
		}
		// A spare was chosen by a replacement and is already in tried.
		srcs, fresh := spare, len(spare)
		spare = nil
		if len(srcs) < d.cfg.Peers-active {
			more, err := d.disc.Discover(ctx, exclude, d.cfg.Peers-active-len(srcs))
			if err != nil {
				discoverErr = err
			}
			srcs = append(srcs, more...)
		}
		for k, src := range srcs {
			if k < fresh && active >= d.cfg.Peers {
				spare = append(spare, src) // its slot is still busy
				continue
			}
			if k >= fresh && tried[src.ID()] || active >= d.cfg.Peers {
				src.Close()
				continue
			}
			if k >= fresh {
				tried[src.ID()] = true
				exclude = append(exclude, src.ID())
			}
			d.mu.Lock()
			p := &peerState{src: src, id: len(d.peers)}
			d.peers = append(d.peers, p)
			d.mu.Unlock()
			active++
			d.active.Add(1)
			wctx, retire := context.WithCancel(ctx)
			p.retire = retire
			wg.Go(func() {
				defer retire()
				err := d.work(wctx, m, s, o, p)
				src.Close()
				select {
				case results <- result{p, err}:
				case <-ctx.Done():
				}
			})
		}
	}
	discover()
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	var replaceTick <-chan time.Time
	if d.cfg.ReplaceSlowest > 0 {
		t := time.NewTicker(d.cfg.ReplaceSlowest)
		defer t.Stop()
		replaceTick = t.C
	}
	for {
		if active > 0 {
			lastWorking = time.Now()
		}
		select {
		case <-s.finished:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case r := <-results:
			active--
			d.active.Add(-1)
			switch {
			case r.err == nil:
			case errors.Is(r.err, errFatal):
				fatal = r.err
			default:
				d.mu.Lock()
				r.p.dropped = r.err.Error()
				d.mu.Unlock()
			}
			if fatal != nil {
				return fatal
			}
			discover()
			backoff = d.cfg.MinBackoff
			timer.Reset(backoff)
		case <-replaceTick:
			// Every peer the next one is expected to beat is replaced at
			// once: each retires when its request is done, and its spare
			// starts in the slot it frees.
			for active == d.cfg.Peers && len(spare) < d.cfg.Peers {
				slow := d.slowest(exclude)
				if slow == nil {
					break
				}
				srcs, _ := d.disc.Discover(ctx, exclude, 1)
				if len(srcs) == 0 {
					break
				}
				src := srcs[0]
				tried[src.ID()] = true
				exclude = append(exclude, src.ID())
				spare = append(spare, src)
				d.mu.Lock()
				slow.dropped = "replaced: slowest of the peers"
				d.mu.Unlock()
				slow.retiring.Store(true) // its slot frees once its request is done and it has closed
			}
		case <-timer.C:
			if active < d.cfg.Peers {
				discover()
			}
			backoff = min(2*backoff, d.cfg.MaxBackoff)
			timer.Reset(backoff)
		}
		if active == 0 && time.Since(lastWorking) > d.cfg.NoPeerTimeout {
			why := ""
			if discoverErr != nil {
				why = fmt.Sprintf(" (last lookup: %v)", discoverErr)
			}
			return fmt.Errorf("%w: none left working after trying %d, none found for %v%s; %s keeps %d verified bytes for a resume",
				ErrNoPeers, len(tried), d.cfg.NoPeerTimeout, why, o.part, d.done.Load())
		}
	}
}

// slowest returns the working peer to replace: the slowest with a measured
// rate, when under 85% of the others' mean or when the discoverer expects
// its next peer to be 15% faster.
func (d *Download) slowest(exclude []string) *peerState {
	d.mu.Lock()
	defer d.mu.Unlock()
	var (
		slow  *peerState
		sum   float64
		count int
	)
	for _, p := range d.peers {
		r := p.rate.Load()
		if p.dropped != "" || r == 0 || p.chunks.Load() == 0 || p.retiring.Load() {
			continue
		}
		if _, seq := p.src.(SequentialSource); seq {
			continue // its rate is not comparable: it pays its request delay once
		}
		sum += float64(r)
		count++
		if slow == nil || r < slow.rate.Load() {
			slow = p
		}
	}
	if slow == nil {
		return nil
	}
	if f, ok := d.disc.(Forecaster); ok {
		if next, ok := f.Forecast(exclude); ok && next > 1.15*float64(slow.rate.Load()) {
			return slow
		}
	}
	if count < 2 {
		return nil
	}
	others := (sum - float64(slow.rate.Load())) / float64(count-1)
	if float64(slow.rate.Load()) >= 0.85*others {
		return nil
	}
	return slow
}

// errFatal marks errors that end the whole download (disk errors).
var errFatal = errors.New("download failed")

// work runs one peer: StreamsPerPeer requests at a time, each taking a
// batch from the shared queue, until the file is done or the peer fails.
func (d *Download) work(ctx context.Context, m *chunkstore.Manifest, s *sched, o *output, p *peerState) error {
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
			if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrProtocol) || errors.Is(err, errFatal) {
				cancel(err)
			}
			close(stopping)
		})
	}
	n := chunkCount(m)
	if hs, ok := p.src.(HaveSource); ok && hs.Partial() {
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
		defer func() {
			hcancel()
			hwg.Wait()
			p.hmu.Lock()
			have := slices.Clone(p.have)
			p.hmu.Unlock()
			s.addAvail(have, -1)
		}()
	} else {
		s.addAvail(nil, 1)
		defer s.addAvail(nil, -1)
	}
	slots := make(chan struct{}, d.cfg.StreamsPerPeer)
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return werr
		case <-stopping:
			wg.Wait()
			return werr
		}
		if p.retiring.Load() {
			<-slots
			wg.Wait()
			return werr
		}
		sctx, scancel := context.WithCancelCause(ctx)
		var st *stream
		for st == nil {
			var wait <-chan struct{}
			accept := p.acceptFunc()
			if accept == nil && d.cfg.RarestFirst {
				accept = func(int) bool { return true }
			}
			if seq, ok := p.src.(SequentialSource); ok {
				seq.Left(s.left())
				st, wait = s.takeFrom(p.id, seq.Next(), scancel)
			} else {
				st, wait = s.take(p.id, d.batchSize(m, p), accept, len(slots) == 1, scancel)
			}
			if st != nil {
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
			wg.Wait()
			return werr
		}
		wg.Go(func() {
			err := d.fetch(sctx, m, s, o, p, st)
			scancel(nil)
			// The slot frees before release wakes the scheduler's waiters:
			// this peer's other stream may then take an endgame duplicate.
			<-slots
			s.release(st)
			if err != nil && !errors.Is(err, errNotNeeded) && ctx.Err() == nil {
				d.mu.Lock()
				d.retries++
				d.mu.Unlock()
				fail(err)
			}
		})
	}
}

// batchSize is how many chunks a request to p should hold: BatchTarget of
// work at p's measured rate.
func (d *Download) batchSize(m *chunkstore.Manifest, p *peerState) int {
	rate := p.rate.Load()
	if rate == 0 {
		return 2
	}
	n := int(rate * int64(d.cfg.BatchTarget) / int64(time.Second) / int64(m.ChunkSize))
	return max(1, min(n, d.cfg.MaxBatch))
}

// fetch runs one request, verifying and writing each chunk it delivers.
func (d *Download) fetch(ctx context.Context, m *chunkstore.Manifest, s *sched, o *output, p *peerState, st *stream) error {
	stall := time.AfterFunc(d.cfg.StallTimeout, func() {
		st.cancel(fmt.Errorf("%w: no chunk for %v", ErrStalled, d.cfg.StallTimeout))
	})
	defer stall.Stop()
	asked := make(map[int]bool, len(st.chunks))
	for _, i := range st.chunks {
		asked[i] = true
	}
	started := time.Now()
	var got int64
	err := p.src.Fetch(ctx, st.chunks, func(i int, pieces [][]byte) error {
		stall.Reset(d.cfg.StallTimeout)
		if !asked[i] {
			return fmt.Errorf("%w: chunk %d was not asked for", ErrProtocol, i)
		}
		delete(asked, i)
		size := 0
		for _, b := range pieces {
			size += len(b)
		}
		if len(m.Hashes) > 0 {
			if err := m.VerifyPieces(i, pieces); err != nil {
				return fmt.Errorf("%w: chunk %d from %s", ErrCorrupt, i, p.src.Addr())
			}
		} else if _, n := m.ChunkBounds(i); n != size {
			return fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrProtocol, i, size, n)
		}
		got += int64(size)
		if el := time.Since(started); el > 20*time.Millisecond {
			p.rate.Store(int64(float64(got) / el.Seconds()))
		}
		if !s.claim(i) {
			d.dup.Add(int64(size))
			return nil
		}
		off, _ := m.ChunkBounds(i)
		if err := o.write(pieces, off); err != nil {
			s.unclaim(i)
			return fmt.Errorf("%w: %w", errFatal, err)
		}
		s.complete(i, st)
		p.bytes.Add(int64(size))
		p.chunks.Add(1)
		d.fetched.Add(int64(size))
		d.done.Add(int64(size))
		return nil
	})
	if cause := context.Cause(ctx); cause != nil && (errors.Is(cause, errNotNeeded) || errors.Is(cause, ErrStalled)) {
		if errors.Is(cause, errNotNeeded) {
			return nil
		}
		return fmt.Errorf("%s: %w", p.src.Addr(), cause)
	}
	if err != nil {
		if errors.Is(err, errFatal) {
			return err
		}
		if errors.Is(err, ErrNotFound) {
			// The peer does not hold the first chunk it did not send: not a
			// fault, it just never gets asked for that chunk again.
			for _, i := range st.chunks {
				if asked[i] {
					p.markLacking(i, chunkCount(m))
					return nil
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

// Ready is closed once the download knows its manifest and has its part
// file open: from then on it can serve the chunks it has verified.
func (d *Download) Ready() <-chan struct{} { return d.ready }

// Manifest is the file's manifest; valid once Ready is closed.
func (d *Download) Manifest() *chunkstore.Manifest { return d.m }

// Have reports which chunks are verified and written.
func (d *Download) Have() []bool {
	d.s.mu.Lock()
	defer d.s.mu.Unlock()
	have := make([]bool, len(d.s.state))
	for i, st := range d.s.state {
		have[i] = st == done
	}
	return have
}

// Complete reports whether every chunk is verified and written.
func (d *Download) Complete() bool {
	select {
	case <-d.s.finished:
		return true
	default:
		return false
	}
}

// ReadChunk reads verified chunk i into buf; a chunk not yet verified is
// ErrNotFound. Valid once Ready is closed, until Close.
func (d *Download) ReadChunk(i int, buf []byte) ([]byte, error) {
	if i < 0 || i >= len(d.s.state) {
		return nil, fmt.Errorf("chunk %d of %d: %w", i, len(d.s.state), chunkstore.ErrOutOfRange)
	}
	d.s.mu.Lock()
	st := d.s.state[i]
	d.s.mu.Unlock()
	if st != done {
		return nil, fmt.Errorf("chunk %d not held yet: %w", i, chunkstore.ErrNotFound)
	}
	off, n := d.m.ChunkBounds(i)
	if _, err := d.o.readAt(buf[:n], off); err != nil {
		return nil, fmt.Errorf("read chunk %d: %w", i, err)
	}
	return buf[:n], nil
}

// WatchHave calls fn with the verified chunks, then with each batch added,
// until ctx ends; the last call has complete set. fn's error ends it.
func (d *Download) WatchHave(ctx context.Context, fn func(have []bool, added []int, complete bool) error) error {
	d.s.mu.Lock()
	wait := d.s.changed
	d.s.mu.Unlock()
	have := d.Have()
	if err := fn(have, nil, d.Complete()); err != nil || d.Complete() {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		}
		d.s.mu.Lock()
		wait = d.s.changed
		var added []int
		for i, st := range d.s.state {
			if st == done && !have[i] {
				have[i] = true
				added = append(added, i)
			}
		}
		d.s.mu.Unlock()
		complete := d.Complete()
		if len(added) > 0 || complete {
			if err := fn(have, added, complete); err != nil {
				return err
			}
		}
		if complete {
			return nil
		}
	}
}

// Close releases the file a serving download keeps open after Run.
func (d *Download) Close() error {
	select {
	case <-d.ready:
		d.o.close()
	default:
	}
	return nil
}
