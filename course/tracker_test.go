package course

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// trackerOf is a Tracker that has heard of ps, in that order.
func trackerOf(ps ...netip.AddrPort) *Tracker {
	tr := &Tracker{Name: "f", Timeout: time.Second}
	tr.learn(TrackerReply{Peers: ps})
	return tr
}

func TestPeersGoToTheFastestPort(t *testing.T) {
	slow, fast, fresh := netip.MustParseAddrPort("127.0.0.1:1001"), netip.MustParseAddrPort("127.0.0.1:1002"), netip.MustParseAddrPort("127.0.0.1:1003")
	tr := trackerOf(slow, fast)
	tr.observe(slow, 2800*time.Millisecond)
	tr.observe(fast, 1100*time.Millisecond)
	got := tr.Peers(nil, 3)
	for _, p := range got {
		if p.addr != fast {
			t.Fatalf("connection to %s, want all on the fast port %s", p.addr, fast)
		}
	}
	if ids := []string{got[0].ID(), got[1].ID(), got[2].ID()}; strings.Join(ids, " ") != "127.0.0.1:1002#0 127.0.0.1:1002#1 127.0.0.1:1002#2" {
		t.Fatalf("ids %v", ids)
	}
	// An untried port is preferred to a measured slow one ...
	tr = trackerOf(slow, fresh)
	tr.observe(slow, 2800*time.Millisecond)
	if p := tr.Peers(nil, 1); len(p) != 1 || p[0].addr != fresh {
		t.Fatalf("want the untried port, got %v", p)
	}
	rate, ok := tr.Forecast(nil)
	if !ok || rate < 0.99*BlockSize/untriedGuess.Seconds() {
		t.Fatalf("forecast %v %v", rate, ok)
	}
	// ... and a port is not used past maxPerPort connections.
	var used []string
	for k := range maxPerPort {
		used = append(used, fresh.String()+"#"+string(rune('0'+k%10)))
	}
	tr = trackerOf(fresh)
	if p := tr.Peers(used, 1); len(p) != 0 {
		t.Fatalf("a port with %d connections tried got another", maxPerPort)
	}
}

func TestFirstConnectionsSpreadOverUntriedPorts(t *testing.T) {
	a, b := netip.MustParseAddrPort("127.0.0.1:1001"), netip.MustParseAddrPort("127.0.0.1:1002")
	tr := trackerOf(a, b)
	per := map[netip.AddrPort]int{}
	for _, p := range tr.Peers(nil, 5) {
		per[p.addr]++
	}
	if per[a] == 0 || per[b] == 0 || per[a]+per[b] != 5 {
		t.Fatalf("connections per port %v: want both ports probed", per)
	}
}

func TestEarlyEstimateGivesWayToATimedBlock(t *testing.T) {
	m := newPorts()
	a := netip.MustParseAddrPort("127.0.0.1:1001")
	m.add(a)
	speed := func() time.Duration { d, _ := m.speedOf(a); return d }
	m.observeEarly(a, 1200*time.Millisecond)
	if speed() != 1200*time.Millisecond {
		t.Fatalf("early estimate not kept: %v", speed())
	}
	m.observe(a, 2000*time.Millisecond)
	if speed() != 2000*time.Millisecond {
		t.Fatalf("first timed block %v, want it to replace the estimate", speed())
	}
	m.observeEarly(a, 1000*time.Millisecond)
	m.observe(a, 1000*time.Millisecond)
	if speed() != 1500*time.Millisecond {
		t.Fatalf("speed %v, want the average of timed blocks only", speed())
	}
}

func TestProbesAFewUntriedPortsAtATime(t *testing.T) {
	known := netip.MustParseAddrPort("127.0.0.1:1001")
	var fresh []netip.AddrPort
	for k := range maxProbes + 1 {
		fresh = append(fresh, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1002+k)))
	}
	tr := trackerOf(append([]netip.AddrPort{known}, fresh...)...)
	tr.observe(known, 1400*time.Millisecond)
	// The best port known is slow: the next connections probe new ones,
	// and the client is told to expect the floor from them.
	used := []string{known.String() + "#0"}
	if rate, ok := tr.Forecast(used); !ok || rate < BlockSize {
		t.Fatalf("forecast for a probe %v %v, want the 1 s floor", rate, ok)
	}
	p := tr.Peers(used, maxProbes+2)
	for k, c := range p {
		want := known
		if k < maxProbes {
			want = fresh[k]
		}
		if c.addr != want {
			t.Fatalf("connection %d to %s, want %s: %d probes, then the port known", k, c.addr, want, maxProbes)
		}
		used = append(used, c.ID())
	}
	// A port that refused is never chosen again; probing goes on.
	tr.refused(fresh[0])
	p = tr.Peers(used, 1)
	if len(p) != 1 || p[0].addr != fresh[maxProbes] {
		t.Fatalf("want a probe of %s after %s refused, got %v", fresh[maxProbes], fresh[0], p)
	}
	// Once a port near the floor is known, no more probing.
	tr.observe(fresh[1], 1050*time.Millisecond)
	tr.learn(TrackerReply{Peers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1100")}})
	p = tr.Peers(used, 1)
	if len(p) != 1 || p[0].addr != fresh[1] {
		t.Fatalf("want the fast port %s, got %v", fresh[1], p)
	}
}

func TestSilentTrackerFailsInBoundedTime(t *testing.T) {
	// A tracker that takes queries and never answers, like one that is
	// down behind a firewall or drops every reply.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	tr := &Tracker{Addr: silent.LocalAddr().(*net.UDPAddr).AddrPort(), Name: "f", Spacing: 20 * time.Millisecond, Timeout: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx) }()
	_, err = tr.Manifest(ctx)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Manifest from a silent tracker: %v, want ErrNoAnswer", err)
	}
	cancel()
	<-done
}

// Queries keep Spacing from the last send, resends included: a query
// answered after a resend is not followed at once by one the tracker's
// rate limit would drop.
func TestTrackerSpacingCountsFromTheLastSend(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	const spacing = 100 * time.Millisecond
	got := make(chan time.Time, 16)
	go func() {
		buf := make([]byte, 2048)
		for n := 0; ; n++ {
			_, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			got <- time.Now()
			if n%3 == 2 { // every third query is answered, the others dropped
				srv.WriteToUDPAddrPort(TrackerReply{NumBlocks: 1, Size: 10, Peers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}}.Format(), from)
			}
		}
	}()
	tr := &Tracker{Addr: srv.LocalAddr().(*net.UDPAddr).AddrPort(), Name: "f", Spacing: spacing, Timeout: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx) }()
	var times []time.Time
	for len(times) < 7 {
		select {
		case at := <-got:
			times = append(times, at)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d queries", len(times))
		}
	}
	cancel()
	<-done
	for k := 1; k < len(times); k++ {
		// A timer never fires early; the margin covers the clocks of two
		// goroutines.
		if gap := times[k].Sub(times[k-1]); gap < spacing-5*time.Millisecond {
			t.Errorf("query %d came %v after the one before; want at least %v", k, gap, spacing)
		}
	}
}

// A refused tracker fails at once, saying so, not after 3 timeouts.
func TestRefusedTrackerSaysRefused(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	tr := &Tracker{Addr: addr, Name: "f", Spacing: 2100 * time.Millisecond, Timeout: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx) }()
	_, err = tr.Manifest(ctx)
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Manifest from a refused port: %v, want ErrRefused (within the hour of timeouts it would otherwise wait)", err)
	}
	cancel()
	<-done
}
