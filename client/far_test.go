package client_test

import (
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

// delayProxy forwards TCP connections to upstream, holding every byte for
// delay in each direction: a peer far away, on loopback.
type delayProxy struct {
	lis      net.Listener
	delay    time.Duration
	mu       sync.Mutex
	upstream string // set once the peer listens; guarded by mu
	wg       sync.WaitGroup
	conns    []net.Conn    // closed with the proxy; guarded by mu
	done     chan struct{} // closed with the proxy: held bytes are dropped
}

func newDelayProxy(t testing.TB, delay time.Duration) *delayProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{lis: lis, delay: delay, done: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// front is a cluster.PeerSpec's Advertise: the peer announces the proxy.
func (p *delayProxy) front(listen string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upstream = listen
	return p.lis.Addr().String()
}

func (p *delayProxy) accept() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(up, c) })
		p.wg.Go(func() { p.pipe(c, up) })
	}
}

// pipe copies src to dst, each read delivered delay after it was read.
func (p *delayProxy) pipe(dst, src net.Conn) {
	type piece struct {
		b  []byte
		at time.Time
	}
	q := make(chan piece, 4096)
	p.wg.Go(func() {
		defer dst.Close()
		hold := time.NewTimer(0)
		defer hold.Stop()
		for pc := range q {
			hold.Reset(time.Until(pc.at)) // the modelled link's delay
			select {
			case <-hold.C:
			case <-p.done:
				for range q {
				}
				return
			}
			if _, err := dst.Write(pc.b); err != nil {
				for range q {
				}
				return
			}
		}
	})
	defer close(q)
	for {
		b := make([]byte, 64<<10)
		n, err := src.Read(b)
		if n > 0 {
			q <- piece{b[:n], time.Now().Add(p.delay)}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			return
		}
	}
}

func (p *delayProxy) close() {
	close(p.done)
	p.lis.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// A peer 120 ms away (a round trip) is measured so and moved to a wide
// window; one on plain loopback keeps the default. Both downloads are
// byte-identical.
func TestFarPeerGetsAWideWindow(t *testing.T) {
	f := newFixture(t, 16<<20)
	far := newDelayProxy(t, 60*time.Millisecond)
	f.start(t, []cluster.PeerSpec{{Advertise: far.front}}, nil)
	out := filepath.Join(t.TempDir(), "far.bin")
	rep, err := f.download(t, testCtx(t), client.Config{Peers: 1}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	p := rep.Peers[0]
	if p.RoundTripMs < 120 || p.Window < 32<<20 {
		t.Fatalf("far peer: round trip %.1f ms, window %d; want at least 120 ms and a window of 32 MiB or more", p.RoundTripMs, p.Window)
	}
}

func TestNearPeerKeepsItsWindow(t *testing.T) {
	f := newFixture(t, 16<<20)
	f.start(t, []cluster.PeerSpec{{}}, nil)
	out := filepath.Join(t.TempDir(), "near.bin")
	// Slowed so that the round trips are timed before the end.
	rep, err := f.download(t, testCtx(t), client.Config{Peers: 1, MaxRate: 32 << 20}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	if p := rep.Peers[0]; p.RoundTripMs <= 0 || p.Window != 0 {
		t.Fatalf("near peer: round trip %.3f ms, window %d; want a round trip timed and no wide window", p.RoundTripMs, p.Window)
	}
}

// A far client of a super-seeder moves its requests to a wider connection
// while its have feed stays on the first: the seeder must still count what
// it sends there as sent to that client, and reveal more. It counted by
// connection, revealed nothing more after the first chunks, and the
// download stalled.
func TestFarClientOfASuperSeederGetsEveryChunk(t *testing.T) {
	f := newFixture(t, 6<<20)
	far := newDelayProxy(t, 40*time.Millisecond)
	f.start(t, []cluster.PeerSpec{{SuperSeed: true, Advertise: far.front}}, nil)
	out := filepath.Join(t.TempDir(), "far.bin")
	rep, err := f.download(t, testCtx(t), client.Config{Peers: 1, NoPeerTimeout: 5 * time.Second}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	if p := rep.Peers[0]; p.Window == 0 {
		t.Fatalf("the peer was not moved to a wide window (round trip %.1f ms): the test shows nothing", p.RoundTripMs)
	}
}
