package client

import (
	"context"
	"errors"
	"fmt"
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
}

// peerState is one peer's worker and its tallies.
type peerState struct {
	src     Source
	id      int
	bytes   atomic.Int64
	chunks  atomic.Int64
	rate    atomic.Int64 // measured bytes per second, 0 until known
	dropped string       // set once when dropped; guarded by Download.mu
}

// NewDownload prepares a download of the file disc describes to out.
func NewDownload(cfg Config, disc Discoverer, out string) *Download {
	return &Download{cfg: cfg.withDefaults(), disc: disc, out: out}
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
	defer o.close()
	d.done.Store(o.resumed)
	rep.BytesResumed = o.resumed

	s := newSched(chunkCount(m), o.have)
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
	var exclude []string
	active := 0
	backoff := d.cfg.MinBackoff
	lastWorking := time.Now()
	var fatal error
	var discoverErr error

	discover := func() {
		if active >= d.cfg.Peers {
			return
		}
		srcs, err := d.disc.Discover(ctx, exclude, d.cfg.Peers-active)
		if err != nil {
			discoverErr = err
		}
		for _, src := range srcs {
			if tried[src.ID()] || active >= d.cfg.Peers {
				src.Close()
				continue
			}
			tried[src.ID()] = true
			exclude = append(exclude, src.ID())
			d.mu.Lock()
			p := &peerState{src: src, id: len(d.peers)}
			d.peers = append(d.peers, p)
			d.mu.Unlock()
			active++
			d.active.Add(1)
			wg.Go(func() {
				err := d.work(ctx, m, s, o, p)
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
	fail := func(err error) {
		errOnce.Do(func() { werr = err; cancel(err) })
	}
	slots := make(chan struct{}, d.cfg.StreamsPerPeer)
	defer wg.Wait()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return werr
		}
		sctx, scancel := context.WithCancelCause(ctx)
		var st *stream
		for st == nil {
			var wait <-chan struct{}
			st, wait = s.take(p.id, d.batchSize(m, p), nil, scancel)
			if st != nil {
				break
			}
			select {
			case <-wait:
				continue
			case <-s.finished:
			case <-ctx.Done():
			}
			scancel(nil)
			<-slots
			wg.Wait()
			return werr
		}
		wg.Go(func() {
			defer func() { <-slots }()
			err := d.fetch(sctx, m, s, o, p, st)
			scancel(nil)
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
	err := p.src.Fetch(ctx, st.chunks, func(i int, data []byte) error {
		stall.Reset(d.cfg.StallTimeout)
		if !asked[i] {
			return fmt.Errorf("%w: chunk %d was not asked for", ErrProtocol, i)
		}
		delete(asked, i)
		if len(m.Hashes) > 0 {
			if err := m.VerifyChunk(i, data); err != nil {
				return fmt.Errorf("%w: chunk %d from %s", ErrCorrupt, i, p.src.Addr())
			}
		} else if _, n := m.ChunkBounds(i); n != len(data) {
			return fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrProtocol, i, len(data), n)
		}
		got += int64(len(data))
		if el := time.Since(started); el > 20*time.Millisecond {
			p.rate.Store(int64(float64(got) / el.Seconds()))
		}
		if !s.claim(i) {
			d.dup.Add(int64(len(data)))
			return nil
		}
		off, _ := m.ChunkBounds(i)
		if err := o.write(data, off); err != nil {
			s.unclaim(i)
			return fmt.Errorf("%w: %w", errFatal, err)
		}
		s.complete(i)
		p.bytes.Add(int64(len(data)))
		p.chunks.Add(1)
		d.fetched.Add(int64(len(data)))
		d.done.Add(int64(len(data)))
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
		return fmt.Errorf("%s: %w", p.src.Addr(), err)
	}
	if len(asked) > 0 {
		return fmt.Errorf("%w: %s ended a request %d chunks short", ErrProtocol, p.src.Addr(), len(asked))
	}
	return nil
}
