package course

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

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
	size  int64  // guarded by mu
	ports *ports // the ports heard of and their speeds; guarded by mu
	err   error  // last query error; guarded by mu

	streamOn bool      // a Stream is open or being opened; guarded by mu
	hold     time.Time // no new connection before this: a reset is on its way to the server; guarded by mu
	streams  int       // Streams handed out; guarded by mu
}

// The port model's updates and questions, under the Tracker's lock: peers
// and streams call them from their own goroutines.

func (t *Tracker) observe(a netip.AddrPort, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ports.observe(a, d)
}

func (t *Tracker) refused(a netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ports.refused(a)
}

func (t *Tracker) observeEarly(a netip.AddrPort, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ports.observeEarly(a, d)
}

func (t *Tracker) observeStream(a netip.AddrPort, pace time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ports.observeStream(a, pace)
}

func (t *Tracker) streamPort() (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ports.streamPort()
}

func (t *Tracker) streamMove(cur netip.AddrPort, pace time.Duration, pos, left int64) (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ports.streamMove(cur, pace, pos, left, t.Timeout)
}

// learn records a tracker reply: the file's size and the ports it named.
func (t *Tracker) learn(tr TrackerReply) {
	t.init()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.size = tr.Size
	t.ports.add(tr.Peers...)
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
		t.ports = newPorts()
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
		if err == nil {
			t.learn(tr)
		}
		t.mu.Lock()
		if ctx.Err() == nil {
			t.err = err
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
		best, _, found := t.ports.next(used)
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
	if t.streamOn || t.streams >= maxStreams || len(t.ports.known) == 0 || t.size <= 0 {
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
	_, d, ok := t.ports.next(used)
	if !ok || d <= 0 {
		return 0, false
	}
	return BlockSize / d.Seconds(), true
}
