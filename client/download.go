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
	disc Discoverer
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

	ready chan struct{}        // closed once m, s and o are set
	m     *chunkstore.Manifest // the file; set before ready
	s     *sched               // the chunk states; set before ready
	o     *output              // the part file; set before ready
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
	return Progress{
		Size: d.size.Load(), Done: d.done.Load(), Resumed: d.resumed.Load(), Fetched: d.fetched.Load(),
		ActivePeers: int(d.active.Load()), Elapsed: el,
	}
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
			d.m, d.s, d.o = m, newSched(chunkCount(m), o.have, false), o
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

	if d.cfg.MaxRate > 0 {
		// A burst of one chunk: the limit holds from the first second.
		d.limit = rate.NewLimiter(rate.Limit(d.cfg.MaxRate), m.ChunkSize)
	}
	s := newSched(chunkCount(m), o.have, d.cfg.TailFirst)
	s.keepDups = d.cfg.FinishDuplicates
	d.m, d.s, d.o = m, s, o
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
		rep.Peers = append(rep.Peers, PeerReport{
			ID: p.src.ID(), Addr: p.src.Addr(), Bytes: p.bytes.Load(), Chunks: int(p.chunks.Load()),
			Dropped: p.dropped, Error: p.dropErr,
		})
	}
	return rep
}
