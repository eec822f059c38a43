package course

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

func TestStreamMovesOnlyWhenItPays(t *testing.T) {
	slow, fast, dead := netip.MustParseAddrPort("127.0.0.1:1001"), netip.MustParseAddrPort("127.0.0.1:1002"), netip.MustParseAddrPort("127.0.0.1:1003")
	tr := &Tracker{Name: "f", Timeout: 10 * time.Second}
	tr.learn(TrackerReply{Peers: []netip.AddrPort{slow, fast, dead}})
	tr.observeStream(slow, 150*time.Millisecond)
	tr.observe(fast, 1100*time.Millisecond) // a pause of 10 ms
	tr.refused(dead)
	cases := []struct {
		name      string
		cur       netip.AddrPort
		pace      time.Duration
		pos, left int64
		want      bool
	}{
		{"early, most of the file left", slow, 150 * time.Millisecond, 20_000, 700_000, true},
		{"far in, much left", slow, 150 * time.Millisecond, 300_000, 400_000, true},
		{"a reread longer than half the timeout", slow, 150 * time.Millisecond, 500_000, 300_000, false},
		{"little left: the restart costs more", slow, 150 * time.Millisecond, 600_000, 20_000, false},
		{"already on the fastest", fast, 10 * time.Millisecond, 20_000, 700_000, false},
		{"pace not measured yet", slow, 0, 0, 700_000, false},
	}
	for _, c := range cases {
		to, ok := tr.streamMove(c.cur, c.pace, c.pos, c.left)
		if ok != c.want || ok && to != fast {
			t.Errorf("%s: move %v to %s, want %v", c.name, ok, to, c.want)
		}
	}
	// A port barely faster is not worth the restart.
	tr.observeStream(fast, 140*time.Millisecond)
	if to, ok := tr.streamMove(slow, 150*time.Millisecond, 20_000, 700_000); ok {
		t.Errorf("moved to %s, only a little faster", to)
	}
	// A new stream opens on the fastest measured port, never a dead one.
	if p, ok := tr.streamPort(); !ok || p != fast {
		t.Errorf("stream port %s %v, want %s", p, ok, fast)
	}
}

func TestStreamHandedOutOneAtATime(t *testing.T) {
	tr := &Tracker{Name: "f", Timeout: time.Second}
	tr.init()
	if _, ok := tr.Stream(); ok {
		t.Fatal("a stream before the tracker answered")
	}
	tr.learn(TrackerReply{Size: 5, Peers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1")}})
	var handed []*Stream
	for range maxStreams + 1 {
		s, ok := tr.Stream()
		if !ok {
			break
		}
		if _, again := tr.Stream(); again {
			t.Fatal("a second stream while one is open")
		}
		handed = append(handed, s)
		s.Close()
	}
	if len(handed) != maxStreams {
		t.Fatalf("%d streams handed out, want at most %d", len(handed), maxStreams)
	}
}

// serveOnce answers one connection with reply (a format string taking the
// request line) and returns its address.
func serveOnce(t *testing.T, reply func(req string) []byte) netip.AddrPort {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write(reply(line))
	}()
	return lis.Addr().(*net.TCPAddr).AddrPort()
}

func TestStreamReadsForwardAndChecksTheHeader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 2000) // 32000 B: 4 blocks
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	good := serveOnce(t, func(req string) []byte {
		if req != "GET f\n" {
			return []byte("400 BAD_FORMAT: <" + req + ">\n")
		}
		return append(FormatHeader(Header{Offset: 0, Length: int64(len(data))}), data...)
	})
	tr := &Tracker{Name: "f", Timeout: 5 * time.Second}
	tr.init()
	tr.learn(TrackerReply{Size: int64(len(data)), Peers: []netip.AddrPort{good}})
	s, _ := tr.Stream()
	defer s.Close()
	var got []int
	err := s.Fetch(ctx, []int{1, 3}, func(n int, p [][]byte) error {
		got = append(got, n)
		// The client names a source from inside this callback.
		named := make(chan string, 1)
		go func() { named <- s.Addr() }()
		select {
		case a := <-named:
			if a != good.String() {
				return fmt.Errorf("Addr %q during a fetch, want %s", a, good)
			}
		case <-ctx.Done():
			return errors.New("Addr waited for the fetch under way")
		}
		off := n * BlockSize
		if want := data[off:min(off+BlockSize, len(data))]; !bytes.Equal(p[0], want) {
			return fmt.Errorf("block %d: wrong bytes", n)
		}
		return nil
	})
	if err != nil || len(got) != 2 {
		t.Fatalf("fetch 1 and 3: %v, got %v", err, got)
	}
	if s.Next() != 4 {
		t.Errorf("Next %d after the last block, want 4", s.Next())
	}
	if err := s.Fetch(ctx, []int{2}, func(int, [][]byte) error { return nil }); !errors.Is(err, errBehind) {
		t.Errorf("a block already passed: %v, want errBehind", err)
	}
	// Closing resets the connection and holds the download's next dial
	// until the server has seen the reset.
	s.Close()
	tr.mu.Lock()
	held := time.Until(tr.hold)
	tr.mu.Unlock()
	if held <= 0 || held > maxLinger {
		t.Errorf("after a reset the next dial is held %v, want up to %v", held, maxLinger)
	}

	// A reply for other bytes than the whole file is refused.
	short := serveOnce(t, func(string) []byte {
		return append(FormatHeader(Header{Offset: 0, Length: 5}), "hello"...)
	})
	tr2 := &Tracker{Name: "f", Timeout: 5 * time.Second}
	tr2.init()
	tr2.learn(TrackerReply{Size: int64(len(data)), Peers: []netip.AddrPort{short}})
	s2, _ := tr2.Stream()
	defer s2.Close()
	if err := s2.Fetch(ctx, []int{0}, func(int, [][]byte) error { return nil }); !errors.Is(err, ErrSyntax) {
		t.Errorf("short whole-file reply: %v, want ErrSyntax", err)
	}
}

func TestStreamAgainstServerPacesAndMeasures(t *testing.T) {
	srv, err := NewServer(ServerConfig{Dir: "testdata", Mode: Testing, TimeScale: 0.05, GradingPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	want, err := os.ReadFile("testdata/test.jpg")
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracker{Name: "test.jpg", Timeout: 5 * time.Second}
	tr.init()
	tr.learn(TrackerReply{Size: int64(len(want)), Peers: []netip.AddrPort{srv.FixedAddr()}})
	s, _ := tr.Stream()
	defer s.Close()
	var out []byte
	blocks := []int{0, 1, 2, 3, 4, 5}
	start := time.Now()
	err = s.Fetch(ctx, blocks, func(n int, p [][]byte) error {
		out = append(out, p[0]...)
		return nil
	})
	took := time.Since(start)
	if err != nil || !bytes.Equal(out, want) {
		t.Fatalf("stream of test.jpg: %v, %d bytes, equal %v", err, len(out), bytes.Equal(out, want))
	}
	// The fixed port pauses 160 ms (8 ms scaled) between events: the
	// stream measured that and told the tracker. A timer never fires
	// early, so the pace is at least about 8 ms; on a loaded machine it
	// may be far longer, but never longer than the whole stream took per
	// event.
	tr.mu.Lock()
	block, _ := tr.ports.speedOf(srv.FixedAddr())
	tr.mu.Unlock()
	most := took / time.Duration((len(want)+event-1)/event)
	if pace := paceOf(block); pace < 6*time.Millisecond || pace > most {
		t.Errorf("measured pace %v, want between 6 ms and %v (the stream's time per event)", pace, most)
	}
}

func TestResetHoldsTheNextDial(t *testing.T) {
	tr := &Tracker{Name: "f", Timeout: time.Second}
	tr.init()
	if err := tr.waitDials(context.Background()); err != nil {
		t.Fatalf("no reset under way: %v", err)
	}
	start := time.Now()
	tr.holdDials(80 * time.Millisecond)
	if err := tr.waitDials(context.Background()); err != nil || time.Since(start) < 80*time.Millisecond {
		t.Fatalf("dial let through after %v (%v), want 80 ms later", time.Since(start), err)
	}
	// A download that is over does not wait.
	tr.holdDials(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.waitDials(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}

// pacedFile serves whole-file requests for data on a loopback port, 1000
// bytes per event with pause between events, and counts connections.
func pacedFile(t *testing.T, data []byte, pause time.Duration) (netip.AddrPort, *atomic.Int32) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return
				}
				if _, err := c.Write(FormatHeader(Header{Offset: 0, Length: int64(len(data))})); err != nil {
					return
				}
				var tick <-chan time.Time // the server's pacing: an event per tick
				if pause > 0 {
					t := time.NewTicker(pause)
					defer t.Stop()
					tick = t.C
				}
				for off := 0; off < len(data); off += event {
					if _, err := c.Write(data[off:min(off+event, len(data))]); err != nil {
						return
					}
					if tick != nil {
						<-tick
					}
				}
			}()
		}
	}()
	return lis.Addr().(*net.TCPAddr).AddrPort(), &conns
}

func TestStreamMovesMidBlockAndKeepsTheBytesRight(t *testing.T) {
	data := make([]byte, 5*BlockSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	slow, _ := pacedFile(t, data, 100*time.Millisecond)
	fast, fastConns := pacedFile(t, data, 0)
	tr := &Tracker{Name: "f", Timeout: 10 * time.Second}
	tr.init()
	tr.learn(TrackerReply{Size: int64(len(data)), Peers: []netip.AddrPort{slow, fast}})
	tr.observeStream(slow, 100*time.Millisecond) // the stream opens on the measured port
	s, _ := tr.Stream()
	defer s.Close()
	s.Left(100) // much left: a move pays
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []byte
	err := s.Fetch(ctx, []int{0, 1, 2, 3, 4}, func(n int, p [][]byte) error {
		if n == 0 {
			if a := s.Addr(); a != slow.String() {
				return fmt.Errorf("block 0 from %s, want the slow port %s", a, slow)
			}
			// A block connection has just measured a far faster port.
			tr.observe(fast, time.Second)
		}
		out = append(out, p[0]...)
		return nil
	})
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("fetch across a move: %v, %d bytes, equal %v", err, len(out), bytes.Equal(out, data))
	}
	if fastConns.Load() != 1 || s.Addr() != fast.String() {
		t.Fatalf("stream on %s after the fast port was measured (%d connections to it), want it moved to %s", s.Addr(), fastConns.Load(), fast)
	}
}
