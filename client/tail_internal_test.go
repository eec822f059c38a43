package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// linkSource models a peer at the far end of a link: a request's first
// chunk comes a round trip after it is sent, the next ones one per
// chunk's time at rate. It counts the requests sent while another still
// had chunks to come.
type linkSource struct {
	data    []byte
	m       *chunkstore.Manifest
	rtt     time.Duration
	rate    int64 // bytes per second
	mu      sync.Mutex
	left    map[int]int // chunks still to come, per request under way
	calls   int
	overlap int // requests sent while another had chunks to come
}

func (s *linkSource) ID() string   { return "link" }
func (s *linkSource) Addr() string { return "link" }
func (s *linkSource) Close() error { return nil }

func (s *linkSource) connectTime() time.Duration { return s.rtt }

func (s *linkSource) SetWindow(int32) bool { return true }

func (s *linkSource) RoundTrip(context.Context) (time.Duration, error) { return s.rtt, nil }

func (s *linkSource) Fetch(ctx context.Context, chunks []int, got func(int, [][]byte) error) error {
	s.mu.Lock()
	call := s.calls
	s.calls++
	for _, n := range s.left {
		if n > 0 {
			s.overlap++
			break
		}
	}
	s.left[call] = len(chunks)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.left, call)
		s.mu.Unlock()
	}()
	wait := s.rtt
	for _, i := range chunks {
		off, n := s.m.ChunkBounds(i)
		wait += time.Duration(float64(n) / float64(s.rate) * float64(time.Second))
		t := time.NewTimer(wait) // the link's pace, not a wait for state
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait = 0
		s.mu.Lock()
		s.left[call]--
		s.mu.Unlock()
		if err := got(i, [][]byte{s.data[off : off+int64(n)]}); err != nil {
			return err
		}
	}
	return nil
}

// oneSource hands out one source, once.
type oneSource struct {
	src  *linkSource
	mu   sync.Mutex
	gave bool
}

func (o *oneSource) Manifest(context.Context) (*chunkstore.Manifest, error) { return o.src.m, nil }

func (o *oneSource) Discover(context.Context, []string, int) ([]Source, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gave {
		return nil, nil
	}
	o.gave = true
	return []Source{o.src}, nil
}

// A far peer's next request goes out while its last one still has about a
// round trip of chunks to come, even with one request per peer: without
// that the link idled a round trip between requests. A near peer's
// requests never overlap beyond StreamsPerPeer.
func TestFarRequestsOverlapAtTheirEnds(t *testing.T) {
	const chunk, chunks = 64 << 10, 64
	data := make([]byte, chunk*chunks)
	for i := range data {
		data[i] = byte(i * 7)
	}
	m := &chunkstore.Manifest{Name: "f", Size: int64(len(data)), ChunkSize: chunk}
	for off := 0; off < len(data); off += chunk {
		m.Hashes = append(m.Hashes, sha256.Sum256(data[off:off+chunk]))
	}
	for _, tc := range []struct {
		name string
		rtt  time.Duration
	}{{"far", 120 * time.Millisecond}, {"near", time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			src := &linkSource{data: data, m: m, rtt: tc.rtt, rate: 4 << 20, left: map[int]int{}}
			out := filepath.Join(t.TempDir(), "out")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := Config{Peers: 1, StreamsPerPeer: 1, NoPeerTimeout: 30 * time.Second}
			if _, err := NewDownload(cfg, &oneSource{src: src}, out).Run(ctx); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, data) {
				t.Fatalf("output differs from the source (%v)", err)
			}
			src.mu.Lock()
			defer src.mu.Unlock()
			if far := tc.rtt > widenAfter; far != (src.overlap > 0) {
				t.Fatalf("%d of %d requests sent while another had chunks to come; want some: %v", src.overlap, src.calls, far)
			}
		})
	}
}

// A far request frees its slot once what is left would arrive within
// tailRoundTrips round trips at its rate; a near one, or one whose rate
// is unknown, never early.
func TestTailFree(t *testing.T) {
	const rate = 10 << 20 // 1 MiB per 100 ms
	far := 100 * time.Millisecond
	for _, tc := range []struct {
		left, rate int64
		delay      time.Duration
		want       bool
	}{
		{1 << 20, rate, far, true},
		{3 << 19, rate, far, true},         // 1.5 round trips
		{2 << 20, rate, far, false},        // 2 round trips
		{1 << 20, 0, far, false},           // rate unknown
		{1 << 10, rate, widenAfter, false}, // near
	} {
		if got := tailFree(tc.left, tc.rate, tc.delay); got != tc.want {
			t.Errorf("%d bytes left at %d B/s, %v away: %v, want %v", tc.left, tc.rate, tc.delay, got, tc.want)
		}
	}
}

// Mid-request, a far peer's rate is known only after two of its round
// trips: its first chunk, a round trip after the request went out, says
// how far it is, not how fast. A near peer's is known after 20 ms.
func TestRateSoFarWaitsTwoRoundTrips(t *testing.T) {
	rtt := 120 * time.Millisecond
	for _, tc := range []struct {
		got       int64
		el, delay time.Duration
		want      int64 // 0: not known yet
	}{
		{64 << 10, rtt + 16*time.Millisecond, rtt, 0},
		{1 << 20, 2 * rtt, rtt, 0},
		{2 << 20, 2*rtt + 80*time.Millisecond, rtt, rateOf(2<<20, 2*rtt+80*time.Millisecond, rtt)},
		{1 << 20, 25 * time.Millisecond, time.Millisecond, rateOf(1<<20, 25*time.Millisecond, time.Millisecond)},
		{1 << 20, 15 * time.Millisecond, 0, 0},
	} {
		r, ok := rateSoFar(tc.got, tc.el, tc.delay)
		if ok != (tc.want != 0) || r != tc.want {
			t.Errorf("%d bytes in %v, %v away: rate %d (known %v), want %d", tc.got, tc.el, tc.delay, r, ok, tc.want)
		}
	}
}
