package course

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// Peer is one TCP connection to one course peer port, with one request in
// flight at a time. It satisfies the client package's Source. It dials on
// first use, so a spare Peer costs no connection.
type Peer struct {
	id      string // "ip:port#k": the k-th connection to that port
	addr    netip.AddrPort
	observe func(netip.AddrPort, time.Duration) // told each block's time; may be nil
	early   func(netip.AddrPort, time.Duration) // told a block's time estimated from its first events; may be nil
	refused func(netip.AddrPort)                // told the port did not accept a connection; may be nil
	settle  func(context.Context) error         // waits before a dial until a reset reached the server; may be nil
	name    string                              // file name as requested, session prefix included
	size    int64
	timeout time.Duration // per block: connect, header and body

	mu   sync.Mutex
	conn net.Conn      // nil until dialled; guarded by mu
	r    *bufio.Reader // guarded by mu
}

// NewPeer prepares a connection to addr for file name of size bytes.
func NewPeer(addr netip.AddrPort, name string, size int64, timeout time.Duration) *Peer {
	return &Peer{id: addr.String(), addr: addr, name: name, size: size, timeout: timeout}
}

// ID names the connection: its address and its rank on that port.
func (p *Peer) ID() string { return p.id }

// Addr is the peer's address.
func (p *Peer) Addr() string { return p.addr.String() }

// Close closes the connection and waits (up to a second) until the server
// has closed its side, so that a connection opened next is not counted
// with this one: the server evicts at random past 5 per IP.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return nil
	}
	c := p.conn
	p.conn = nil
	if tc, ok := c.(*net.TCPConn); ok && tc.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, c)
	}
	return c.Close()
}

// Fetch requests the blocks one at a time and calls got for each. Any
// failure closes the connection: the reference server can interleave
// replies on a connection whose request was given up.
func (p *Peer) Fetch(ctx context.Context, blocks []int, got func(int, [][]byte) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		if p.settle != nil {
			if err := p.settle(ctx); err != nil {
				return err
			}
		}
		d := net.Dialer{Timeout: p.timeout}
		c, err := d.DialContext(ctx, "tcp", p.addr.String())
		if err != nil {
			if p.refused != nil && ctx.Err() == nil {
				p.refused(p.addr)
			}
			return fmt.Errorf("connect %s: %w", p.addr, err)
		}
		p.conn, p.r = c, bufio.NewReaderSize(c, 64<<10)
	}
	// Cancelling ctx cuts the block under way, but never one of a later
	// Fetch.
	defer cutOnCancel(ctx, p.conn).stop()
	buf := make([]byte, BlockSize)
	for _, n := range blocks {
		data, err := p.block(ctx, n, buf)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil {
			p.conn.Close()
			p.conn = nil
			return err
		}
		if err := got(n, [][]byte{data}); err != nil {
			return err
		}
	}
	return nil
}

// block asks for block n and reads its reply.
func (p *Peer) block(ctx context.Context, n int, buf []byte) ([]byte, error) {
	if n < 0 || n >= NumBlocks(p.size) {
		return nil, fmt.Errorf("block %d of %d: never asked", n, NumBlocks(p.size))
	}
	start := time.Now()
	SetDeadline(ctx, p.conn, start.Add(p.timeout))
	req := Request{Name: p.name, Kind: KindBlock, Block: n}
	if _, err := io.WriteString(p.conn, req.String()+"\n"); err != nil {
		return nil, err
	}
	h, err := ReadHeader(p.r)
	if err != nil {
		return nil, err
	}
	want := min(BlockSize, p.size-int64(n)*BlockSize)
	if h.Offset != int64(n)*BlockSize || h.Length != want {
		return nil, fmt.Errorf("%w: block %d answered with offset %d length %d", ErrSyntax, n, h.Offset, h.Length)
	}
	read := int64(0)
	if p.early != nil && want > 2*event {
		// The body comes in 1000-byte events d ms apart after the server's
		// wait: the gap between the first events tells the port's pace
		// long before the block ends.
		if _, err := io.ReadFull(p.r, buf[:event]); err != nil {
			return nil, err
		}
		first := time.Now()
		if _, err := io.ReadFull(p.r, buf[event:2*event]); err != nil {
			return nil, err
		}
		gap := time.Since(first)
		events := (want + event - 1) / event
		p.early(p.addr, first.Sub(start)+time.Duration(events-1)*gap)
		read = 2 * event
	}
	if _, err := io.ReadFull(p.r, buf[read:want]); err != nil {
		return nil, err
	}
	if p.observe != nil {
		p.observe(p.addr, time.Since(start))
	}
	return buf[:want], nil
}

// Tracker finds a file's size and peers through the course tracker. Run
// asks it in the background at Spacing; Manifest and Peers read what it
// learned. It is the course side of the client package's Discoverer (the
// adapter converts Peers' result).
type Tracker struct {
	Addr    netip.AddrPort
	Name    string        // file name, session prefix included
	Spacing time.Duration // between queries; the tracker drops faster ones (>= 2.1 s)
	Timeout time.Duration // per tracker query, and per block on peers

	initOnce sync.Once
	ready    chan struct{} // closed after the first answer (or a 400)

	mu    sync.Mutex
	size  int64            // guarded by mu
	known []netip.AddrPort // every peer port heard of, first seen first; guarded by mu
	seen  map[netip.AddrPort]bool
	err   error                            // last query error; guarded by mu
	grow  chan struct{}                    // closed and replaced when known grows; guarded by mu
	speed map[netip.AddrPort]time.Duration // recent block time per port; guarded by mu
	timed map[netip.AddrPort]bool          // ports with a whole block timed; guarded by mu

	streamOn bool      // a Stream is open or being opened; guarded by mu
	hold     time.Time // no new connection before this: a reset is on its way to the server; guarded by mu
	streams  int       // Streams handed out; guarded by mu
}

// event is the reference server's unit of pacing: it writes a block in
// 1000-byte events with a pause between them.
const event = 1000

// untriedGuess is the block time assumed of a port never measured. The
// reference's ports take 1.0 to 3.0 s per block, 2.0 s on average; a guess
// below the average makes the client explore while the ports it knows are
// mediocre, and stay once it has found a fast one.
const untriedGuess = 1500 * time.Millisecond

// probingGuess is the block time assumed of a port whose first block is
// under way and not yet estimated: the average, so further connections
// spread over other ports and the client learns more of them at once.
const probingGuess = 2000 * time.Millisecond

// observe records a block's time on a port: the first replaces any early
// estimate, later ones make a moving average.
func (t *Tracker) observe(a netip.AddrPort, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.speed[a]; ok && t.timed[a] {
		d = (old + d) / 2
	}
	t.speed[a] = d
	t.timed[a] = true
}

// deadPort is the block time recorded for a port that refused a
// connection (withdrawn by churn): it is never chosen again.
const deadPort = time.Hour

// refused records that a port did not accept a connection.
func (t *Tracker) refused(a netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.speed[a], t.timed[a] = deadPort, true
}

// observeEarly records a block time estimated from a block's first
// events, for a port with no block timed yet.
func (t *Tracker) observeEarly(a netip.AddrPort, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.timed[a] {
		t.speed[a] = d
	}
}

// ErrNoPorts means the tracker has named no usable port yet.
var ErrNoPorts = errors.New("no usable port known")

// eventsPerBlock is how many paced events a block is: a port with pause d
// takes about 1 s + eventsPerBlock·d per block.
const eventsPerBlock = BlockSize / event

// observeStream records a port's pace measured by a whole-file stream, as
// the block time it implies. It is measured over many events, so it
// replaces any estimate.
func (t *Tracker) observeStream(a netip.AddrPort, pace time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.speed[a] = time.Second + eventsPerBlock*pace
	t.timed[a] = true
}

// paceOf is the pause between events a block time implies.
func paceOf(block time.Duration) time.Duration {
	return max(0, (block-time.Second)/eventsPerBlock)
}

// streamPort is where a new Stream should open: the port measured fastest,
// or else the first port heard of that has not refused a connection.
func (t *Tracker) streamPort() (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var (
		best  netip.AddrPort
		bestD time.Duration
		found bool
	)
	for _, a := range t.known {
		d, ok := t.speed[a]
		if ok && d < deadPort && (!found || d < bestD) {
			best, bestD, found = a, d, true
		}
	}
	if found {
		return best, true
	}
	for _, a := range t.known {
		if _, ok := t.speed[a]; !ok {
			return a, true
		}
	}
	return netip.AddrPort{}, false
}

// othersRate is the rate, in bytes per second, assumed of the block
// connections besides a Stream: four at about 1.3 s a block.
const othersRate = 30000

// moveGain is how much sooner a move must be expected to finish: the
// estimates are noisy, and a move throws away what the stream has read.
const moveGain = 0.9

// streamMove tells a Stream on cur, pace per event, pos bytes into its
// reply, with left bytes still to be written by anyone, whether to reopen
// on another port. It models the time to finish: staying, the stream and
// the block connections share what is left; moving, the block connections
// work alone while the new stream waits out the old port's pause and the
// request delay and reads the pos bytes again, then both share the rest.
// It moves to the fastest measured port when that finishes in under
// moveGain of the time of staying, and the reread takes under half the
// Timeout (the client takes longer for a stall).
func (t *Tracker) streamMove(cur netip.AddrPort, pace time.Duration, pos, left int64) (netip.AddrPort, bool) {
	to, ok := t.streamPort()
	if !ok || to == cur || pace <= 0 {
		return netip.AddrPort{}, false
	}
	t.mu.Lock()
	next := max(paceOf(t.speed[to]), time.Millisecond)
	t.mu.Unlock()
	vOld, vNew := event/pace.Seconds(), event/next.Seconds()
	stay := float64(left) / (vOld + othersRate)
	catch := (pace + time.Second + 50*time.Millisecond).Seconds() + float64(pos)/vNew
	if catch >= stay || catch > t.Timeout.Seconds()/2 {
		return netip.AddrPort{}, false // or the reread would look like a stall
	}
	move := catch + max(0, float64(left)-othersRate*catch)/(vNew+othersRate)
	if move < moveGain*stay {
		return to, true
	}
	return netip.AddrPort{}, false
}

// holdDials keeps new connections back for d: a connection was reset and
// the server drops it only at its next write.
func (t *Tracker) holdDials(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hold = later(t.hold, time.Now().Add(d))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// waitDials returns once no reset is on its way to the server, or with
// ctx's error.
func (t *Tracker) waitDials(ctx context.Context) error {
	t.mu.Lock()
	wait := time.Until(t.hold)
	t.mu.Unlock()
	if wait <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxStreams caps the Streams one download opens, so a server that
// refuses or breaks whole-file requests costs a few attempts only.
const maxStreams = 4

func (t *Tracker) init() {
	t.initOnce.Do(func() {
		t.ready = make(chan struct{})
		t.seen = map[netip.AddrPort]bool{}
		t.grow = make(chan struct{})
		t.speed = map[netip.AddrPort]time.Duration{}
		t.timed = map[netip.AddrPort]bool{}
	})
}

// Query asks the tracker once: it resends after each receive timeout,
// keeping Spacing between sends, until an answer or ctx ends. A dropped
// reply never hangs it. It returns when it last sent, so the next query
// keeps Spacing from that send.
func (t *Tracker) Query(ctx context.Context) (TrackerReply, time.Time, error) {
	var sent time.Time
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(t.Addr))
	if err != nil {
		return TrackerReply{}, sent, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	req := []byte(Request{Name: t.Name, Kind: KindTorrent}.String() + "\n")
	for {
		sent = time.Now()
		SetDeadline(ctx, conn, sent.Add(t.Spacing))
		if _, err := conn.Write(req); err != nil {
			return TrackerReply{}, sent, err
		}
		// A dropped or rate-limited query: ask again once Spacing is over.
		n, err := conn.Read(buf)
		if err == nil {
			tr, err := ParseTrackerReply(buf[:n])
			return tr, sent, err
		}
		if ctx.Err() != nil {
			return TrackerReply{}, sent, ctx.Err()
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return TrackerReply{}, sent, err
		}
	}
}

// maxRefusals is how many refused queries in a row make the tracker
// down: a refusal (ICMP port unreachable) is an answer, not a loss.
const maxRefusals = 3

// refusedRetry is the wait before asking again after a refusal.
const refusedRetry = 200 * time.Millisecond

// Run queries the tracker every Spacing, counted from the last send,
// until ctx ends or the tracker says the file does not exist.
func (t *Tracker) Run(ctx context.Context) {
	t.init()
	first := true
	refusals := 0
	for ctx.Err() == nil {
		tr, sent, err := t.Query(ctx)
		if errors.Is(err, syscall.ECONNREFUSED) {
			refusals++
		} else {
			refusals = 0
		}
		t.mu.Lock()
		if ctx.Err() == nil {
			t.err = err
		}
		if err == nil {
			t.size = tr.Size
			for _, p := range tr.Peers {
				if !t.seen[p] {
					t.seen[p] = true
					t.known = append(t.known, p)
				}
			}
			close(t.grow)
			t.grow = make(chan struct{})
		}
		t.mu.Unlock()
		if first && (err == nil || errors.Is(err, ErrBadFormat) || refusals >= maxRefusals || ctx.Err() != nil) {
			close(t.ready)
			first = false
		}
		if errors.Is(err, ErrBadFormat) {
			return
		}
		if sent.IsZero() {
			sent = time.Now()
		}
		wait := time.Until(sent.Add(t.Spacing))
		if refusals > 0 {
			wait = refusedRetry // a refused query never reached the tracker's rate limit
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
	}
}

// trackerPatience is how many Timeouts Manifest waits for the tracker's
// first answer: the tracker drops queries (rate limit, UDP loss), so a
// few resends are normal, but none answering means it is down.
const trackerPatience = 3

// ErrNoAnswer means the tracker never answered.
var ErrNoAnswer = errors.New("no answer")

// ErrRefused means nothing listens at the tracker's address.
var ErrRefused = errors.New("refused")

// Manifest waits for the tracker's first answer and describes the file as
// 10000-byte blocks without hashes: the protocol carries none, so blocks
// are checked for offset and length only.
func (t *Tracker) Manifest(ctx context.Context) (*chunkstore.Manifest, error) {
	t.init()
	wait := time.NewTimer(trackerPatience * t.Timeout)
	defer wait.Stop()
	select {
	case <-t.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-wait.C:
		return nil, fmt.Errorf("%w: tracker %s did not answer for %v (queried every %v)", ErrNoAnswer, t.Addr, trackerPatience*t.Timeout, t.Spacing)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		if errors.Is(t.err, ErrBadFormat) {
			return nil, fmt.Errorf("tracker %s does not know %s: %w", t.Addr, t.Name, chunkstore.ErrNotFound)
		}
		if errors.Is(t.err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: tracker %s refused the query (nothing listens on that UDP port)", ErrRefused, t.Addr)
		}
		return nil, fmt.Errorf("tracker %s: %s: %w", t.Addr, t.Name, t.err)
	}
	return &chunkstore.Manifest{Name: t.Name, Size: t.size, ChunkSize: BlockSize}, nil
}

// maxPerPort caps connections ever opened to one port, so a withdrawn
// port is not retried for ever.
const maxPerPort = 12

// maxProbes is how many connections may be on ports not yet measured.
const maxProbes = 3

// exploreAbove is the block time above which the client keeps probing
// untried ports: with 1.0 s the floor of any port, a better one is likely
// while the best known is slower than this.
const exploreAbove = 1100 * time.Millisecond

// nextPortLocked picks the port for one more connection. While the best
// port measured takes over exploreAbove per block and no probe is under
// way, it is an untried port (a probe costs one block at that port's pace,
// and the tracker names only two ports per query, so exploring one at a
// time keeps up). Otherwise it is the port expected fastest: by measured
// block time, probingGuess for a port whose first block is under way, or
// untriedGuess. The duration returned is the block time the caller may
// expect: the floor, 1 s, for a probe.
func (t *Tracker) nextPortLocked(used map[netip.AddrPort]int) (netip.AddrPort, time.Duration, bool) {
	bestKnown := time.Duration(math.MaxInt64)
	probing := 0
	var untried []netip.AddrPort
	for _, a := range t.known {
		d, ok := t.speed[a]
		switch {
		case ok:
			bestKnown = min(bestKnown, d)
		case used[a] > 0:
			probing++
		default:
			untried = append(untried, a)
		}
	}
	if len(untried) > 0 && probing < maxProbes && bestKnown > exploreAbove {
		return untried[0], time.Second, true
	}
	var (
		best     netip.AddrPort
		bestTime time.Duration
		found    bool
	)
	for _, a := range t.known {
		if used[a] >= maxPerPort {
			continue
		}
		guess, ok := t.speed[a]
		switch {
		case ok:
		case used[a] > 0:
			guess = probingGuess
		default:
			guess = untriedGuess
		}
		if guess >= deadPort {
			continue
		}
		if !found || guess < bestTime {
			best, bestTime, found = a, guess, true
		}
	}
	return best, bestTime, found
}

func usedPorts(exclude []string) map[netip.AddrPort]int {
	used := map[netip.AddrPort]int{}
	for _, x := range exclude {
		if ap, err := netip.ParseAddrPort(strings.SplitN(x, "#", 2)[0]); err == nil {
			used[ap]++
		}
	}
	return used
}

// Peers returns up to limit new connections, at once (the caller retries
// as the tracker names more). Pacing is per connection, so a port may carry
// several: each goes to the port expected fastest. A connection's id is
// "ip:port#k"; exclude lists the ids already used.
func (t *Tracker) Peers(exclude []string, limit int) []*Peer {
	t.init()
	used := usedPorts(exclude)
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Peer
	for len(out) < limit {
		best, _, found := t.nextPortLocked(used)
		if !found {
			break
		}
		p := NewPeer(best, t.Name, t.size, t.Timeout)
		p.id = fmt.Sprintf("%s#%d", best, used[best])
		p.observe, p.early, p.refused, p.settle = t.observe, t.observeEarly, t.refused, t.waitDials
		used[best]++
		out = append(out, p)
	}
	return out
}

// Stream returns a new whole-file Stream when none is open, the tracker
// has answered, and fewer than maxStreams were handed out; it picks its
// port when it first fetches.
func (t *Tracker) Stream() (*Stream, bool) {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.streamOn || t.streams >= maxStreams || len(t.known) == 0 || t.size <= 0 {
		return nil, false
	}
	t.streamOn = true
	t.streams++
	s := &Stream{t: t, id: fmt.Sprintf("stream#%d", t.streams-1), name: t.Name, size: t.size, timeout: t.Timeout}
	s.onClose = func() {
		t.mu.Lock()
		t.streamOn = false
		t.mu.Unlock()
	}
	return s, true
}

// Forecast is the expected rate, in bytes per second, of the connection
// Peers would open next.
func (t *Tracker) Forecast(exclude []string) (float64, bool) {
	t.init()
	used := usedPorts(exclude)
	t.mu.Lock()
	defer t.mu.Unlock()
	_, d, ok := t.nextPortLocked(used)
	if !ok || d <= 0 {
		return 0, false
	}
	return BlockSize / d.Seconds(), true
}
