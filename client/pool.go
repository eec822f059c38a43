package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// pool keeps up to Config.Peers workers running until every chunk is
// written: it starts workers on peers the discoverer finds, reads how each
// ends, and replaces the slowest. Its fields belong to the goroutine
// running run; workers reach it only through results.
type pool struct {
	d       *Download
	results chan workerResult
	wg      sync.WaitGroup // the workers

	tried       map[string]bool // every peer id started or excluded
	exclude     []string        // the same ids, for the discoverer
	active      int             // workers running
	spare       []Source        // found by a replacement, started once a slot frees
	discoverErr error           // the last discovery failure, for the final error
}

// workerResult is how one worker ended.
type workerResult struct {
	p   *peerState
	err error
}

func newPool(d *Download) *pool {
	p := &pool{d: d, results: make(chan workerResult), tried: map[string]bool{}, exclude: slices.Clone(d.cfg.Exclude)}
	for _, id := range p.exclude {
		p.tried[id] = true
	}
	return p
}

// run returns nil once every chunk is written, or the error that ended
// the download: a fatal one from a worker or the discoverer, ctx's, or
// ErrNoPeers when no request has been under way for NoPeerTimeout.
func (p *pool) run(ctx context.Context) error {
	d, cfg := p.d, p.d.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer p.wg.Wait()
	defer cancel()
	defer func() {
		for _, src := range p.spare {
			src.Close()
		}
	}()
	backoff := cfg.MinBackoff
	lastWorking := time.Now()
	if err := p.discover(ctx); err != nil {
		return err
	}
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	var replaceTick <-chan time.Time
	if cfg.ReplaceSlowest > 0 {
		t := time.NewTicker(cfg.ReplaceSlowest)
		defer t.Stop()
		replaceTick = t.C
	}
	for {
		// Working means a request under way: a worker waiting for chunks
		// its peer may never hold does not keep the download alive.
		if d.inflight.Load() > 0 {
			lastWorking = time.Now()
		}
		select {
		case <-d.s.finished:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case r := <-p.results:
			p.active--
			d.active.Add(-1)
			if r.err != nil {
				if v, _ := decide(r.err); v == endDownload && ctx.Err() == nil {
					return r.err
				}
			}
			if err := p.discover(ctx); err != nil {
				return err
			}
			backoff = cfg.MinBackoff
			timer.Reset(backoff)
		case <-replaceTick:
			p.replace(ctx)
		case <-timer.C:
			if err := p.discover(ctx); err != nil {
				return err
			}
			backoff = min(2*backoff, cfg.MaxBackoff)
			timer.Reset(backoff)
		}
		if d.inflight.Load() == 0 && time.Since(lastWorking) > cfg.NoPeerTimeout {
			return p.noPeers()
		}
	}
}

// noPeers is the error of a download no peer kept working on.
func (p *pool) noPeers() error {
	d := p.d
	why := ""
	if p.discoverErr != nil {
		why = fmt.Sprintf(" (last lookup: %v)", p.discoverErr)
	}
	working := ""
	if p.active > 0 {
		working = fmt.Sprintf(" (%d connected, none holding a chunk still needed)", p.active)
	}
	return fmt.Errorf("%w: none working for %v after trying %d%s%s; %s keeps %d verified bytes for a resume",
		ErrNoPeers, d.cfg.NoPeerTimeout, len(p.tried), working, why, d.o.partPath(), d.done.Load())
}

// discover fills free slots: spares chosen by a replacement first, then
// new peers from the discoverer. Its error is fatal (the name now means
// other contents); other discovery failures are kept for the final error.
func (p *pool) discover(ctx context.Context) error {
	d := p.d
	select {
	case <-d.s.finished:
		return nil // never a new connection once the file is complete
	default:
	}
	if p.active >= d.cfg.Peers {
		return nil
	}
	// A spare was chosen by a replacement and is already in tried.
	srcs, fresh := p.spare, len(p.spare)
	p.spare = nil
	if len(srcs) < d.cfg.Peers-p.active {
		dctx, cancel := p.untilFinished(ctx)
		more, err := d.find.Discover(dctx, p.exclude, d.cfg.Peers-p.active-len(srcs))
		cancel()
		if isClosed(d.s.finished) { // done meanwhile: whatever the lookup said, it is not needed
			for _, src := range append(srcs, more...) {
				src.Close()
			}
			return nil
		}
		if err != nil {
			if v, _ := decide(err); v == endDownload && ctx.Err() == nil {
				for _, src := range append(srcs, more...) {
					src.Close()
				}
				return err
			}
			p.discoverErr = err
		}
		srcs = append(srcs, more...)
	}
	for k, src := range srcs {
		if k < fresh && p.active >= d.cfg.Peers {
			p.spare = append(p.spare, src) // its slot is still busy
			continue
		}
		if k >= fresh && p.tried[src.ID()] || p.active >= d.cfg.Peers {
			src.Close()
			continue
		}
		if k >= fresh {
			p.tried[src.ID()] = true
			p.exclude = append(p.exclude, src.ID())
		}
		p.start(ctx, src)
	}
	return nil
}

// untilFinished is ctx, also cancelled once every chunk is written: a
// lookup at a registry that went silent must not hold the finished
// download for its whole timeout. Call the returned cancel when done.
func (p *pool) untilFinished(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-p.d.s.finished:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// start runs a worker on src.
func (p *pool) start(ctx context.Context, src Source) {
	d := p.d
	d.mu.Lock()
	ps := &peerState{src: src, id: len(d.peers)}
	d.peers = append(d.peers, ps)
	d.mu.Unlock()
	if es, ok := src.(earlySource); ok {
		// Set aside before any worker runs, or another one's first
		// requests take them from the queue.
		for _, e := range es.early() {
			if chunks, _ := e.want(); chunks != nil && d.s.reserve(ps.id, chunks) {
				ps.early = append(ps.early, e)
			} else {
				e.drop() // a resumed download holds some of them
			}
		}
	}
	p.active++
	d.active.Add(1)
	wctx, retire := context.WithCancel(ctx)
	ps.retire = retire
	p.wg.Go(func() {
		defer retire()
		err := d.work(wctx, ps) // a failure's drop reason is recorded there
		src.Close()
		select {
		case p.results <- workerResult{ps, err}:
		case <-ctx.Done():
		}
	})
}

// replace moves the slot of every peer the next one is expected to beat:
// each retires when its request is done, and its spare starts in the slot
// it frees.
func (p *pool) replace(ctx context.Context) {
	d := p.d
	for p.active == d.cfg.Peers && len(p.spare) < d.cfg.Peers {
		slow := d.slowest(p.exclude)
		if slow == nil {
			return
		}
		dctx, cancel := p.untilFinished(ctx)
		srcs, _ := d.find.Discover(dctx, p.exclude, 1)
		cancel()
		if len(srcs) == 0 {
			return
		}
		src := srcs[0]
		p.tried[src.ID()] = true
		p.exclude = append(p.exclude, src.ID())
		p.spare = append(p.spare, src)
		d.drop(slow, DropReplaced, nil)
		slow.retiring.Store(true) // its slot frees once its request is done and it has closed
	}
}

// drop records, once, why peer p stopped being used.
func (d *Download) drop(p *peerState, reason DropReason, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.dropped != "" {
		return
	}
	p.dropped = reason
	if err != nil {
		p.dropErr = err.Error()
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
	if f, ok := d.find.(Forecaster); ok {
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
