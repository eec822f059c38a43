// Command hosts measures registry federation across hosts: R registries,
// each on its own host of a network-namespace lab, and a load generator on
// one more host announcing P peers spread over them (real leases, churn).
// It measures how long an announce, a leave and a lease expiry take to
// reach every registry, whether any registry shows an entry after its
// lease, registry memory and CPU, and how long the registries take to
// agree again after a partition. It needs root (the lab).
//
//	go build -o /tmp/shoal ./cmd/shoal
//	sudo go run ./bench/hosts -shoal /tmp/shoal -registries 20 -peers 10000
//
// The same command against a binary built from an older revision compares
// two federations side by side.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/netlab"
)

type config struct {
	shoal      string
	label      string
	registries int
	peers      int
	lease      time.Duration
	churn      float64
	steady     time.Duration
	partition  time.Duration
	cut        int
	probeEvery time.Duration
	slack      time.Duration
	extra      []string
	logs       string
	verbose    bool
	check      bool
	profile    string
}

func main() {
	var c config
	var extra string
	flag.StringVar(&c.shoal, "shoal", "", "shoal binary the registries run (default: build ./cmd/shoal)")
	flag.StringVar(&c.label, "label", "", "name of this run in the table (default: the binary's git revision)")
	flag.IntVar(&c.registries, "registries", 20, "registry hosts")
	flag.IntVar(&c.peers, "peers", 10000, "peers the load generator keeps announced")
	flag.DurationVar(&c.lease, "lease", 30*time.Second, "lease the registries grant; peers re-announce every third of it")
	flag.Float64Var(&c.churn, "churn", 0.10, "fraction of the peers replaced per minute (half leave, half go silent)")
	flag.DurationVar(&c.steady, "steady", 60*time.Second, "how long announces, leaves and expiries are probed")
	flag.DurationVar(&c.partition, "partition", 60*time.Second, "how long -cut registries are partitioned away (0: no partition)")
	flag.IntVar(&c.cut, "cut", 5, "registries on the small side of the partition")
	flag.DurationVar(&c.probeEvery, "probe-every", time.Second, "time between probes")
	flag.DurationVar(&c.slack, "slack", 3*time.Second, "what counts as agreement: every entry older than this everywhere, every leave older than this nowhere")
	flag.StringVar(&extra, "registry-flags", "", "extra flags for every registry, space-separated")
	flag.BoolVar(&c.verbose, "v", false, "print each registry's disagreement")
	flag.BoolVar(&c.check, "check", false, "exit 1 if an entry was shown after its lease or the registries did not agree again after the partition")
	flag.StringVar(&c.profile, "profile", "", "write each registry's CPU and heap profiles to this folder (registry-N.prof, registry-N.heap)")
	flag.StringVar(&c.logs, "logs", "", "write each registry's output to a file in this folder at the end")
	flag.Parse()
	c.extra = strings.Fields(extra)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &netlab.Main{}
	err := run(ctx, m, c)
	m.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hosts:", err)
		os.Exit(1)
	}
	if m.Failed() {
		os.Exit(1)
	}
}

// peer is one simulated peer and what the generator knows to be true of it.
type peer struct {
	id   string
	n    int64
	reg  int
	file chunkstore.ID
	stop chan bool // true: leave; false: go silent

	mu      sync.Mutex
	secret  string
	firstOK time.Time // first accepted announce's answer
	lastOK  time.Time // latest accepted announce's answer
	ended   time.Time // when it left or went silent; zero while live
	left    bool
}

// leaseEnd is the latest moment any registry may still show p: its last
// lease counted from when the announce's answer arrived (the registry
// granted it earlier).
func (p *peer) leaseEnd(lease time.Duration) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastOK.IsZero() {
		return time.Time{}
	}
	return p.lastOK.Add(lease)
}

type bench struct {
	cfg   config
	regs  []shoalv1.RegistryServiceClient
	slots []chan struct{} // per registry: calls in flight, under its per-connection limit
	procs []*netlab.Proc
	names []string // registry addresses

	mu    sync.Mutex
	peers map[string]*peer // by id, every peer ever started; guarded by mu
	live  []*peer          // started and not stopped; guarded by mu
	seq   atomic.Int64

	announceErrs  atomic.Int64
	firstRefusal  atomic.Value // string
	violations    atomic.Int64 // an entry shown after its lease
	violation     atomic.Value // string: the first one
	ownViolations atomic.Int64 // shown late by the registry the peer announces to
	worstLate     atomic.Int64 // the latest, in ns after the lease
	shared        []chunkstore.ID
}

func run(ctx context.Context, m *netlab.Main, c config) error {
	if c.cut >= c.registries {
		return fmt.Errorf("-cut %d must be below -registries %d", c.cut, c.registries)
	}
	if c.shoal == "" {
		dir, err := os.MkdirTemp("", "shoal-hosts-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		c.shoal = filepath.Join(dir, "shoal")
		if out, err := exec.Command("go", "build", "-o", c.shoal, "./cmd/shoal").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	if c.label == "" {
		c.label = "shoal"
		if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
			c.label = strings.TrimSpace(string(out))
		}
	}
	lab := netlab.New(m, c.registries+1)
	gen := lab.Hosts[c.registries]
	b := &bench{cfg: c, peers: map[string]*peer{}}
	for range 200 {
		var id chunkstore.ID
		rand.Read(id[:])
		b.shared = append(b.shared, id)
	}
	first := lab.Hosts[0].Addr(7000)
	for i := range c.registries {
		h := lab.Hosts[i]
		args := []string{c.shoal, "--log-level", "warn", "registry", "--listen", h.Addr(7000), "--lease", c.lease.String()}
		if i > 0 {
			args = append(args, "--join", first)
		}
		if c.profile != "" {
			os.MkdirAll(c.profile, 0o755)
			args = append(args, "--cpuprofile", filepath.Join(c.profile, fmt.Sprintf("registry-%d.prof", i+1)),
				"--memprofile", filepath.Join(c.profile, fmt.Sprintf("registry-%d.heap", i+1)))
		}
		args = append(args, c.extra...)
		b.procs = append(b.procs, h.Start("registry "+h.Name, args...))
		cc, err := grpc.NewClient(h.Addr(7000), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(gen.Dial))
		if err != nil {
			return err
		}
		defer cc.Close()
		b.regs = append(b.regs, shoalv1.NewRegistryServiceClient(cc))
		b.slots = append(b.slots, make(chan struct{}, 48))
		b.names = append(b.names, h.Addr(7000))
	}
	if c.logs != "" {
		// Also when the run fails: that is when they are read.
		defer func() {
			os.MkdirAll(c.logs, 0o755)
			for i, p := range b.procs {
				os.WriteFile(filepath.Join(c.logs, fmt.Sprintf("registry-%d.log", i+1)), []byte(p.Output()), 0o644)
			}
		}()
	}
	if err := b.waitServing(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d registries serving; announcing %d peers...\n", c.registries, c.peers)

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: deferred calls run last first
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	sem := make(chan struct{}, 64)
	var initial sync.WaitGroup
	for range c.peers {
		p := b.newPeer()
		sem <- struct{}{}
		initial.Add(1)
		wg.Go(func() {
			b.announce(ctx, p)
			<-sem
			initial.Done()
			b.runPeer(ctx, p)
		})
	}
	initial.Wait()
	fmt.Fprintf(os.Stderr, "announced %d peers in %.1f s (%d refused)\n", c.peers, time.Since(start).Seconds(), b.announceErrs.Load())
	wg.Go(func() { b.churn(ctx, &wg) })
	// Measure a formed federation: every registry lists every peer.
	formed := time.Now()
	for {
		if ok, _ := b.snapshot(ctx, b.allRegs()); ok {
			break
		}
		if time.Since(formed) > 2*c.lease || ctx.Err() != nil {
			return fmt.Errorf("registries do not agree %v after the announces", time.Since(formed).Round(time.Second))
		}
	}
	fmt.Fprintf(os.Stderr, "every registry lists every peer %.1f s after the last announce\n", time.Since(formed).Seconds())

	cpu0 := b.cpu()
	t0 := time.Now()
	// Steady state: probes, and a snapshot of every registry now and then.
	res := &results{}
	probeCtx, stopProbes := context.WithTimeout(ctx, c.steady)
	var probes sync.WaitGroup
	probes.Go(func() { b.probe(probeCtx, &probes, res) })
	agreeSteady, roundsSteady := 0, 0
	for probeCtx.Err() == nil {
		if ok, _ := b.snapshot(ctx, b.allRegs()); ok {
			agreeSteady++
		}
		roundsSteady++
		sleep(probeCtx, 5*time.Second)
	}
	stopProbes()
	probes.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	heal, sampleHeal := time.Duration(-1), time.Duration(-1)
	if c.partition > 0 {
		fmt.Fprintf(os.Stderr, "partition: %d registries away for %v\n", c.cut, c.partition)
		lab.Partition(lab.Hosts[:c.cut], lab.Hosts[c.cut:c.registries])
		cutAt := time.Now()
		end := cutAt.Add(c.partition)
		for time.Now().Before(end) && ctx.Err() == nil {
			b.snapshot(ctx, b.allRegs()) // counts violations on both sides
			sleep(ctx, min(5*time.Second, time.Until(end)))
		}
		sample := b.changedDuring(cutAt, time.Now(), healSample)
		lab.Heal()
		healed := time.Now()
		fmt.Fprintf(os.Stderr, "healed; waiting for agreement...\n")
		// A full listing of every registry takes seconds a round at this
		// scale: the entries that changed during the partition, looked up
		// on every registry, time the heal finer.
		// A round's lookups share the 2 minutes: a registry that never
		// answers costs a timeout per lookup, 300 of them.
		sctx, scancel := context.WithDeadline(ctx, healed.Add(2*time.Minute))
		for sctx.Err() == nil {
			if b.sampleAgrees(sctx, sample, healed) && sctx.Err() == nil {
				sampleHeal = time.Since(healed)
				break
			}
		}
		scancel()
		for time.Since(healed) < 2*time.Minute && ctx.Err() == nil {
			ok, _ := b.snapshot(ctx, b.allRegs())
			if ok {
				heal = time.Since(healed)
				break
			}
			sleep(ctx, time.Second) // a listing of every registry is load too
		}
	}
	wall := time.Since(t0)
	cpu1 := b.cpu()
	cancel()
	wg.Wait()
	b.report(res, agreeSteady, roundsSteady, heal, sampleHeal, cpu1-cpu0, wall)
	for _, p := range b.procs { // a clean stop writes the profiles
		p.Interrupt()
	}
	for _, p := range b.procs {
		p.Wait(10 * time.Second)
	}
	if c.check && (b.violations.Load() > 0 || c.partition > 0 && heal < 0) {
		m.Errorf("check failed: %d entries shown after their lease, agreement after the partition %v", b.violations.Load(), heal)
	}
	return nil
}

func (b *bench) allRegs() []int {
	r := make([]int, len(b.regs))
	for i := range r {
		r[i] = i
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// waitServing waits until every registry answers.
func (b *bench) waitServing(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for i, r := range b.regs {
		for {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := r.Lookup(cctx, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_Name{Name: "nothing"}})
			cancel()
			if status.Code(err) == codes.NotFound {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("registry %s does not answer: %v\n%s", b.names[i], err, b.procs[i].Output())
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
	return nil
}

func (b *bench) newPeer() *peer {
	n := b.seq.Add(1)
	p := &peer{id: fmt.Sprintf("p%06d", n), n: n, reg: int(n) % len(b.regs), stop: make(chan bool, 1)}
	rand.Read(p.file[:])
	b.mu.Lock()
	b.peers[p.id] = p
	b.live = append(b.live, p)
	b.mu.Unlock()
	return p
}

func (b *bench) wire(p *peer) *shoalv1.PeerInfo {
	n := p.n
	files := []*shoalv1.FileInfo{{ContentId: p.file.String(), Name: "u/" + p.id, Size: 1 << 20}}
	for k := range 2 {
		id := b.shared[(int(n)*7+k*13+len(p.id))%len(b.shared)]
		files = append(files, &shoalv1.FileInfo{ContentId: id.String(), Name: "shared-" + id.String()[:12], Size: 64 << 20})
	}
	return &shoalv1.PeerInfo{PeerId: p.id, Address: fmt.Sprintf("10.99.%d.%d:7000", len(p.id)%250, int(n)%250+1), Files: files}
}

// announce sends p's registration to its registry and records the answer.
func (b *bench) announce(ctx context.Context, p *peer) bool {
	p.mu.Lock()
	secret := p.secret
	p.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b.slots[p.reg] <- struct{}{}
	resp, err := b.regs[p.reg].Announce(cctx, &shoalv1.AnnounceRequest{Peer: b.wire(p), Secret: secret})
	<-b.slots[p.reg]
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil && b.announceErrs.Add(1) == 1 {
			b.firstRefusal.Store(fmt.Sprintf("%s at %s: %v", p.id, b.names[p.reg], err))
		}
		return false
	}
	p.mu.Lock()
	p.secret = resp.GetSecret()
	if p.firstOK.IsZero() {
		p.firstOK = now
	}
	p.lastOK = now
	p.mu.Unlock()
	return true
}

// runPeer re-announces p every third of the lease until it is stopped.
func (b *bench) runPeer(ctx context.Context, p *peer) {
	for {
		d := time.Duration(float64(b.cfg.lease/3) * (0.9 + 0.2*mrand.Float64()))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case leave := <-p.stop:
			t.Stop()
			b.end(ctx, p, leave)
			return
		case <-t.C:
			b.announce(ctx, p)
		}
	}
}

// end stops p: a leave, or silence until its lease runs out.
func (b *bench) end(ctx context.Context, p *peer, leave bool) time.Time {
	p.mu.Lock()
	secret := p.secret
	p.mu.Unlock()
	if leave {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b.regs[p.reg].Leave(cctx, &shoalv1.LeaveRequest{PeerId: p.id, Address: b.wire(p).Address, Secret: secret})
		cancel()
	}
	now := time.Now()
	p.mu.Lock()
	p.ended, p.left = now, leave
	p.mu.Unlock()
	return now
}

// churn replaces the configured fraction of live peers per minute.
func (b *bench) churn(ctx context.Context, wg *sync.WaitGroup) {
	per := b.cfg.churn * float64(b.cfg.peers)
	if per <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(float64(time.Minute) / per))
	defer t.Stop()
	leave := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		i := mrand.IntN(len(b.live))
		old := b.live[i]
		b.live[i] = b.live[len(b.live)-1]
		b.live = b.live[:len(b.live)-1]
		b.mu.Unlock()
		leave = !leave
		old.stop <- leave
		p := b.newPeer()
		wg.Go(func() {
			b.announce(ctx, p)
			b.runPeer(ctx, p)
		})
	}
}

// results collects the probes' samples.
type results struct {
	mu       sync.Mutex
	announce []time.Duration // announce answered → every registry shows it
	leave    []time.Duration // leave answered → no registry shows it
	expiry   []time.Duration // last poll showing it, less the lease end (< 0: in time)
	lost     int             // probes that never became visible everywhere
}

func (r *results) add(s *[]time.Duration, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*s = append(*s, d)
}

// probe starts a probe peer every probeEvery: it is announced, watched
// until every registry shows it, then alternately left or silenced and
// watched until no registry shows it.
func (b *bench) probe(ctx context.Context, wg *sync.WaitGroup, res *results) {
	t := time.NewTicker(b.cfg.probeEvery)
	defer t.Stop()
	leave := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		leave = !leave
		wg.Go(func() { b.probeOne(res, leave) })
	}
}

func (b *bench) probeOne(res *results, leave bool) {
	// A probe outlives the steady phase's context: it ends by its own
	// deadlines.
	ctx, cancel := context.WithTimeout(context.Background(), 2*b.cfg.lease)
	defer cancel()
	p := b.newPeer()
	b.mu.Lock() // probes are not part of the churned population
	b.live = slices.DeleteFunc(b.live, func(q *peer) bool { return q == p })
	b.mu.Unlock()
	if !b.announce(ctx, p) {
		return
	}
	t0 := p.lastOK
	if !b.watch(ctx, p, true, 50*time.Millisecond, time.Time{}) {
		res.mu.Lock()
		res.lost++
		res.mu.Unlock()
		b.end(ctx, p, true)
		return
	}
	res.add(&res.announce, time.Since(t0))
	if leave {
		t1 := b.end(ctx, p, true)
		if b.watch(ctx, p, false, 50*time.Millisecond, time.Time{}) {
			res.add(&res.leave, time.Since(t1))
		}
		return
	}
	b.end(ctx, p, false)
	end := p.leaseEnd(b.cfg.lease)
	sleep(ctx, time.Until(end.Add(-2*time.Second)))
	if ok, last := b.watchSeen(ctx, p, false, 100*time.Millisecond, end); ok && !last.IsZero() {
		res.add(&res.expiry, last.Sub(end))
	}
}

// watch polls every registry every step until all show p (want) or none
// does, and reports whether that happened before ctx ended. Each answer
// showing p after leaseEnd (if set) counts as a violation.
func (b *bench) watch(ctx context.Context, p *peer, want bool, step time.Duration, leaseEnd time.Time) bool {
	ok, _ := b.watchSeen(ctx, p, want, step, leaseEnd)
	return ok
}

// watchSeen is watch, also returning when a poll that showed p was last
// sent (zero if none did).
func (b *bench) watchSeen(ctx context.Context, p *peer, want bool, step time.Duration, leaseEnd time.Time) (bool, time.Time) {
	var lastShown time.Time
	pending := b.allRegs()
	for len(pending) > 0 {
		var mu sync.Mutex
		var still []int
		var wg sync.WaitGroup
		for _, r := range pending {
			wg.Go(func() {
				sent := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := b.regs[r].Lookup(cctx, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_ContentId{ContentId: p.file.String()}})
				cancel()
				shown := err == nil && slices.ContainsFunc(resp.GetPeers(), func(q *shoalv1.PeerInfo) bool { return q.GetPeerId() == p.id })
				if err != nil && status.Code(err) != codes.NotFound {
					shown = !want // unknown: ask again
				}
				if shown && !leaseEnd.IsZero() && sent.After(leaseEnd) && err == nil {
					b.violate(fmt.Sprintf("registry %s showed %s %v after its lease", b.names[r], p.id, sent.Sub(leaseEnd)), r == p.reg, sent.Sub(leaseEnd))
				}
				mu.Lock()
				if shown && err == nil && sent.After(lastShown) {
					lastShown = sent
				}
				if shown != want {
					still = append(still, r)
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		pending = still
		if len(pending) == 0 {
			return true, lastShown
		}
		if ctx.Err() != nil {
			return false, lastShown
		}
		sleep(ctx, step)
	}
	return true, lastShown
}

func (b *bench) violate(what string, own bool, late time.Duration) {
	if b.violations.Add(1) == 1 {
		b.violation.Store(what)
	}
	if own {
		b.ownViolations.Add(1)
	}
	for {
		cur := b.worstLate.Load()
		if int64(late) <= cur || b.worstLate.CompareAndSwap(cur, int64(late)) {
			break
		}
	}
}

// healSample is how many entries changed during a partition are looked up
// on every registry after it heals.
const healSample = 300

// changedDuring is up to n peers, at random, that announced for the first
// time, left or went silent between from and to.
func (b *bench) changedDuring(from, to time.Time, n int) []*peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*peer
	for _, p := range b.peers {
		p.mu.Lock()
		changed := p.firstOK.After(from) && p.firstOK.Before(to) || p.ended.After(from) && p.ended.Before(to)
		p.mu.Unlock()
		if changed {
			out = append(out, p)
		}
	}
	mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(n, len(out))]
}

// sampleAgrees looks every sampled peer up on every registry and reports
// whether each is shown or not as the truth has it, counted from since:
// a peer live since before then shown, one that left before then not. A
// peer that changed again since is left out.
func (b *bench) sampleAgrees(ctx context.Context, sample []*peer, since time.Time) bool {
	var (
		wg   sync.WaitGroup
		bad  atomic.Int64
		sent = time.Now()
	)
	for r := range b.regs {
		wg.Go(func() {
			for _, p := range sample {
				p.mu.Lock()
				must := p.ended.IsZero() && p.firstOK.Before(since)
				mustNot := p.left && p.ended.Before(since)
				p.mu.Unlock()
				if !must && !mustNot {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := b.regs[r].Lookup(cctx, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_ContentId{ContentId: p.file.String()}})
				cancel()
				shown := err == nil && len(resp.GetPeers()) > 0
				if err != nil && status.Code(err) != codes.NotFound || must != shown {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if b.cfg.verbose {
		fmt.Fprintf(os.Stderr, "%s sampled lookups: %d of %d x %d disagree (%v a round)\n", time.Now().Format("15:04:05.000"), bad.Load(), len(sample), len(b.regs), time.Since(sent).Round(time.Millisecond))
	}
	return bad.Load() == 0
}

// snapshot lists every peer each registry in regs shows (through the
// peers' unique files), counts entries shown after their lease, and
// reports whether all agree with the truth: every peer live for longer
// than slack shown, none that left longer than slack ago.
func (b *bench) snapshot(ctx context.Context, regs []int) (bool, int) {
	var wg sync.WaitGroup
	agree := make([]bool, len(regs))
	for k, r := range regs {
		wg.Go(func() { agree[k] = b.snapshotOne(ctx, r) })
	}
	wg.Wait()
	n := 0
	for _, ok := range agree {
		if ok {
			n++
		}
	}
	return n == len(regs), n
}

func (b *bench) snapshotOne(ctx context.Context, r int) bool {
	start := time.Now()
	shown := map[string]bool{}
	token := ""
	for {
		sent := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := b.regs[r].ListFiles(cctx, &shoalv1.ListFilesRequest{Prefix: "u/", PageToken: token})
		cancel()
		if err != nil {
			return false
		}
		b.mu.Lock()
		for _, f := range resp.GetFiles() {
			if f.GetHolders()+f.GetPartialHolders() == 0 {
				continue
			}
			id := strings.TrimPrefix(f.GetFile().GetName(), "u/")
			shown[id] = true
			if p := b.peers[id]; p != nil {
				if end := p.leaseEnd(b.cfg.lease); !end.IsZero() && sent.After(end) {
					b.violate(fmt.Sprintf("registry %s listed %s %v after its lease", b.names[r], id, sent.Sub(end)), r == p.reg, sent.Sub(end))
				}
			}
		}
		b.mu.Unlock()
		token = resp.GetNextPageToken()
		if token == "" {
			break
		}
	}
	cut := start.Add(-b.cfg.slack)
	b.mu.Lock()
	defer b.mu.Unlock()
	missing, extra := 0, 0
	var example string
	for id, p := range b.peers {
		p.mu.Lock()
		must := p.ended.IsZero() && !p.firstOK.IsZero() && p.firstOK.Before(cut)
		mustNot := p.left && p.ended.Before(cut)
		p.mu.Unlock()
		if must && !shown[id] {
			missing++
			example = id
		}
		if mustNot && shown[id] {
			extra++
			example = id
		}
	}
	if missing+extra > 0 && b.cfg.verbose {
		p := b.peers[example]
		p.mu.Lock()
		info := fmt.Sprintf("first %s last %s ended %s left %v", p.firstOK.Format("15:04:05.000"), p.lastOK.Format("15:04:05.000"), p.ended.Format("15:04:05.000"), p.left)
		p.mu.Unlock()
		at := map[int]string{}
		for _, q := range []int{r, p.reg} {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := b.regs[q].Lookup(cctx, &shoalv1.LookupRequest{File: &shoalv1.LookupRequest_ContentId{ContentId: p.file.String()}})
			cancel()
			at[q] = fmt.Sprintf("%d peers %v", len(resp.GetPeers()), err)
		}
		fmt.Fprintf(os.Stderr, "%s %s: %d missing, %d left but listed (%s: %s; here %s, at its registry %s %s)\n", time.Now().Format("15:04:05.000"), b.names[r], missing, extra, example, info, at[r], b.names[p.reg], at[p.reg])
	}
	return missing+extra == 0
}

// cpu is the registries' CPU time so far.
func (b *bench) cpu() time.Duration {
	var sum time.Duration
	for _, p := range b.procs {
		sum += procCPU(p.Pid())
	}
	return sum
}

func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// peakRSS is a process's peak resident memory in bytes.
func peakRSS(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	return 0
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[int(math.Ceil(f*float64(len(s))))-1] }
	return fmt.Sprintf("%.2f / %.2f / %.2f", q(0.5).Seconds(), q(0.99).Seconds(), s[len(s)-1].Seconds())
}

func (b *bench) report(res *results, agree, rounds int, heal, sampleHeal, cpu time.Duration, wall time.Duration) {
	var rss int64
	for _, p := range b.procs {
		rss = max(rss, peakRSS(p.Pid()))
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	c := b.cfg
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "federation\t%s\n", c.label)
	fmt.Fprintf(tw, "registries, peers, lease, churn\t%d, %d, %v, %.0f%%/min\n", c.registries, c.peers, c.lease, 100*c.churn)
	fmt.Fprintf(tw, "announce visible everywhere, p50 / p99 / max (s)\t%s  (%d probes, %d never)\n", quantiles(res.announce), len(res.announce), res.lost)
	fmt.Fprintf(tw, "leave gone everywhere, p50 / p99 / max (s)\t%s  (%d probes)\n", quantiles(res.leave), len(res.leave))
	fmt.Fprintf(tw, "expiry: last sighting less lease end, p50 / p99 / max (s)\t%s  (%d probes; < 0 is in time)\n", quantiles(res.expiry), len(res.expiry))
	fmt.Fprintf(tw, "entries shown after their lease\t%d (%d by the peer's own registry; latest %v after)\n", b.violations.Load(), b.ownViolations.Load(), time.Duration(b.worstLate.Load()).Round(time.Millisecond))
	if v, ok := b.violation.Load().(string); ok {
		fmt.Fprintf(tw, "  first\t%s\n", v)
	}
	fmt.Fprintf(tw, "steady snapshots where all registries agree\t%d of %d\n", agree, rounds)
	if c.partition > 0 {
		h := "not within 2 min"
		if heal >= 0 {
			h = fmt.Sprintf("%.1f s", heal.Seconds())
		}
		fmt.Fprintf(tw, "agreement after a %v partition of %d, full listings\t%s\n", c.partition, c.cut, h)
		h = "not within 2 min"
		if sampleHeal >= 0 {
			h = fmt.Sprintf("%.1f s", sampleHeal.Seconds())
		}
		fmt.Fprintf(tw, "  on up to %d entries changed during it, looked up\t%s\n", healSample, h)
	}
	fmt.Fprintf(tw, "registry peak RSS, largest (MiB)\t%.0f\n", float64(rss)/(1<<20))
	fmt.Fprintf(tw, "registry CPU, mean of %d (%% of a core)\t%.1f\n", len(b.procs), 100*cpu.Seconds()/wall.Seconds()/float64(len(b.procs)))
	fmt.Fprintf(tw, "announces refused\t%d\n", b.announceErrs.Load())
	if v, ok := b.firstRefusal.Load().(string); ok {
		fmt.Fprintf(tw, "  first\t%s\n", v)
	}
	tw.Flush()
	if b.violations.Load() > 0 {
		fmt.Fprintln(os.Stderr, "entries were shown after their lease")
	}
}
