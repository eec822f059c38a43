package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/shoalnet/shoal/chunkstore"
)

// Download fetches one file. Build it with NewDownload, run it once with
// Run; Progress may be called from any goroutine meanwhile.
type Download struct {
	cfg  Config
	disc Discoverer     // a file's; nil for a tree
	tdis TreeDiscoverer // a tree's; nil for a file
	find finder         // disc or tdis
	out  string

	start    time.Time
	size     atomic.Int64
	done     atomic.Int64 // bytes written, resumed included
	resumed  atomic.Int64 // bytes found verified in OUT.part at the start
	fetched  atomic.Int64 // bytes fetched and written in this run
	dup      atomic.Int64 // bytes fetched but not needed
	active   atomic.Int32 // peers working
	inflight atomic.Int32 // requests under way at any peer

	mu      sync.Mutex
	peers   []*peerState // every peer tried, in order; guarded by mu
	retries int          // chunk requests handed back; guarded by mu

	limit *rate.Limiter // MaxRate's bucket; nil when unlimited; set before ready

	ready chan struct{}        // closed once lay, s and o are set
	m     *chunkstore.Manifest // the file; nil for a tree; set before ready
	tree  *chunkstore.Tree     // the tree; nil for a file; set before ready
	lay   *layout              // the chunks of every file; set before ready
	s     *sched               // the chunk states; set before ready
	o     sink                 // the part file or folder; set before ready
}

// sink is where a download's verified chunks go: one part file, or a
// folder of them.
type sink interface {
	// writeChunk stores chunk g's verified bytes.
	writeChunk(g int, pieces [][]byte) error
	// readChunk reads verified chunk g into buf, for serving.
	readChunk(g int, buf []byte) ([]byte, error)
	// partPath is where the partial download is kept.
	partPath() string
	// commit moves the complete download to its final path.
	commit(ctx context.Context) error
	// close releases what commit did not.
	close()
}

// finder finds peers: what the pool needs of a Discoverer or a
// TreeDiscoverer.
type finder interface {
	Discover(ctx context.Context, exclude []string, limit int) ([]Source, error)
}

// NewDownload prepares a download of the file disc describes to out.
func NewDownload(cfg Config, disc Discoverer, out string) *Download {
	return &Download{cfg: cfg.withDefaults(), disc: disc, find: disc, out: out, ready: make(chan struct{})}
}

// Progress returns a snapshot of the download.
func (d *Download) Progress() Progress {
	var el time.Duration
	if !d.start.IsZero() {
		el = time.Since(d.start)
	}
	return Progress{
		Size: d.size.Load(), Done: d.done.Load(), Resumed: d.resumed.Load(), Fetched: d.fetched.Load(),
		ActivePeers: int(d.active.Load()), Elapsed: el,
	}
}

// Run downloads the file. On success the verified file is at out; on
// failure nothing is at out and out.part keeps what was verified.
func (d *Download) Run(ctx context.Context) (*Report, error) {
	d.start = time.Now()
	if d.tdis != nil {
		return d.runTree(ctx)
	}
	if w, ok := d.disc.(interface{ closeWarm() }); ok {
		defer w.closeWarm() // connections made ahead that no Discover took
	}
	m, err := d.disc.Manifest(ctx)
	if err != nil {
		return nil, err
	}
	d.size.Store(m.Size)
	rep := &Report{Name: m.Name, Size: m.Size, Output: d.out, Peers: []PeerReport{}}
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
		if d.cfg.Serve { // seed it: every chunk held, the file open for reads
			d.m, d.lay, d.s, d.o = m, fileLayout(m), newSched(chunkCount(m), o.have, false), o
			close(d.ready)
		}
		return d.finish(rep), nil
	}
	if !d.cfg.Serve {
		defer o.close()
	}
	d.done.Store(o.resumed)
	d.resumed.Store(o.resumed)
	rep.BytesResumed = o.resumed

	d.m = m
	return d.fetchAll(ctx, rep, fileLayout(m), o, o.have)
}

// fetchAll runs the pool until every chunk of lay not in have is in o,
// then commits o.
func (d *Download) fetchAll(ctx context.Context, rep *Report, lay *layout, o sink, have []bool) (*Report, error) {
	if d.cfg.MaxRate > 0 {
		// A burst of one chunk: the limit holds from the first second.
		d.limit = rate.NewLimiter(rate.Limit(d.cfg.MaxRate), max(1, lay.most))
	}
	s := newSched(lay.chunks(), have, d.cfg.TailFirst)
	s.keepDups = d.cfg.FinishDuplicates
	s.share = len(lay.files) > 1
	s.lens = func(g int) int { _, _, n := lay.bounds(g); return n }
	d.lay, d.s, d.o = lay, s, o
	close(d.ready)
	if s.left() > 0 {
		p := newPool(d)
		if err := p.run(ctx); err != nil {
			return d.finish(rep), err
		}
	}
	if err := o.commit(ctx); err != nil {
		return d.finish(rep), err
	}
	return d.finish(rep), nil
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
		rep.Peers = append(rep.Peers, PeerReport{
			ID: p.src.ID(), Addr: p.src.Addr(), Bytes: p.bytes.Load(), Chunks: int(p.chunks.Load()),
			RoundTripMs: float64(p.delay.Load()) / 1e6, Window: int64(p.window.Load()),
			Dropped: p.dropped, Error: p.dropErr,
		})
	}
	return rep
}
