package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"

	"github.com/shoalnet/shoal/course"
)

const testdata = "../../course/testdata"

// startCourse runs a course server on loopback for the test.
func startCourse(t *testing.T, cfg course.ServerConfig) *course.Server {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = testdata
	}
	s, err := course.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func sameAs(t *testing.T, got, name string) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(testdata, name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("%s differs from %s (%v)", got, name, err)
	}
}

func TestCourseClientAgainstServer(t *testing.T) {
	cases := []struct {
		name     string
		cfg      course.ServerConfig
		noStream bool
	}{
		{"unlimited", course.ServerConfig{Mode: course.Unlimited, GradingPort: -1}, false},
		// Testing mode at 1/50 of real time: churn (every 0.6 s) withdraws
		// ports under the client, and a third of tracker replies are lost.
		{"testing-scaled", course.ServerConfig{Mode: course.Testing, TimeScale: 0.02, GradingPort: -1, DropTrackerReplies: 0.3}, false},
		// A server that allows 3 connections per IP evicts the client's
		// 4th and 5th: the download survives the silent closes.
		{"evicting", course.ServerConfig{Mode: course.Testing, TimeScale: 0.02, GradingPort: -1, MaxConnsPerIP: 3}, false},
		// --stream=false: block requests only.
		{"blocks-only", course.ServerConfig{Mode: course.Testing, TimeScale: 0.02, GradingPort: -1}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := startCourse(t, c.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			conns := &connCount{}
			for k, img := range []string{"redsox.jpg", "test.jpg"} {
				out := filepath.Join(t.TempDir(), img)
				rep, err := courseSwarm(ctx, s.TrackerAddr(), img, out, swarmOptions{conns: 5, timeout: 5 * time.Second, noStream: c.noStream, wrap: conns.wrap})
				if err != nil {
					t.Fatalf("%s: %v", img, err)
				}
				sameAs(t, out, img)
				t.Logf("%s: %.2fs, %d connections tried", img, rep.Seconds, len(rep.Peers))
				// One connection streams the file from its start (whether
				// it delivers before the block connections finish depends
				// on the draw of port speeds), the others request blocks.
				var streamed, blocks int
				for _, p := range rep.Peers {
					if strings.HasPrefix(p.ID, "stream#") {
						streamed += p.Chunks
					} else {
						blocks += p.Chunks
					}
				}
				if c.noStream && streamed > 0 || streamed+blocks < course.NumBlocks(rep.Size) {
					t.Errorf("%s: %d blocks streamed, %d by block requests: %+v", img, streamed, blocks, rep.Peers)
				}
				// The server saw at most 5 at once during the first
				// download: every connection the client replaced (a
				// stream by a reset) was gone from the server before the
				// next one opened. (The second download may start while
				// the server still counts the first one's last closes.)
				if _, evictions := s.Stats(); k == 0 && c.cfg.MaxConnsPerIP == 0 && evictions > 0 {
					t.Errorf("%s: the server evicted %d connections: it saw a 6th", img, evictions)
				}
			}
			// Counted on the client: the server may still list a
			// connection the client closed a moment ago.
			if (conns.streams.Load() == 0) != c.noStream {
				t.Errorf("%d whole-file streams opened (blocks only: %v)", conns.streams.Load(), c.noStream)
			}
			if most := conns.most.Load(); most > 5 || most == 0 {
				t.Errorf("the client had %d connections open at once", most)
			}
			_, evictions := s.Stats()
			if c.cfg.MaxConnsPerIP == 3 && evictions == 0 {
				t.Errorf("no eviction happened; the case tests nothing")
			}

		})
	}
}

func TestCourseWholeFileAndUnknownFile(t *testing.T) {
	s := startCourse(t, course.ServerConfig{Mode: course.Unlimited, GradingPort: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := filepath.Join(t.TempDir(), "whole.jpg")
	if err := run(ctx, []string{"course", "get", "test.jpg", "--server", s.FixedAddr().String(), "-o", out}, nil, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	sameAs(t, out, "test.jpg")
	missing := filepath.Join(t.TempDir(), "nope")
	err := run(ctx, []string{"course", "get", "nope.jpg", "--tracker", s.TrackerAddr().String(), "-o", missing}, nil, io.Discard, io.Discard)
	if code := exitCode(err, io.Discard); code != exitNotFound {
		t.Errorf("unknown file: exit %d (%v), want %d", code, err, exitNotFound)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a file was left for an unknown name")
	}
}

func TestCourseGrading(t *testing.T) {
	s := startCourse(t, course.ServerConfig{Mode: course.Testing, TimeScale: 0.02})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"course", "get", "--iam", "4242", "--grader", s.GradingAddr().String(), "--tracker", s.TrackerAddr().String()}, nil, &out, io.Discard)
	if err != nil || !strings.Contains(out.String(), "4242 : Success!") {
		t.Fatalf("grading: %v, %q", err, out.String())
	}
	// A wrong answer is reported as such.
	c, err := net.Dial("tcp", s.GradingAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "IAM 77\n")
	r := bufio.NewReader(c)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "77_redsox.jpg : ") {
		t.Fatalf("challenge: %q, %v", line, err)
	}
	c.Write([]byte{1, 2, 3, 4, '\n'})
	if line, err := r.ReadString('\n'); err != nil || !strings.Contains(line, "Failure") {
		t.Fatalf("wrong checksum: %q, %v", line, err)
	}
}

// connCount counts sources with a connection possibly open: from their
// first Fetch until Close, which over-counts, never under-counts.
type connCount struct {
	open, most atomic.Int32
	streams    atomic.Int32 // whole-file streams handed out
}

func (c *connCount) wrap(s client.Source) client.Source {
	cs := &countedSource{Source: s, c: c}
	if seq, ok := s.(client.SequentialSource); ok {
		c.streams.Add(1)
		return countedStream{cs, seq}
	}
	return cs
}

// countedStream keeps a whole-file stream sequential once wrapped.
type countedStream struct {
	*countedSource
	seq client.SequentialSource
}

func (s countedStream) Next() int { return s.seq.Next() }

func (s countedStream) Left(n int) { s.seq.Left(n) }

type countedSource struct {
	client.Source
	c      *connCount
	opened atomic.Bool
}

func (s *countedSource) Fetch(ctx context.Context, blocks []int, got func(int, [][]byte) error) error {
	if !s.opened.Swap(true) {
		n := s.c.open.Add(1)
		for m := s.c.most.Load(); n > m && !s.c.most.CompareAndSwap(m, n); m = s.c.most.Load() {
		}
	}
	return s.Source.Fetch(ctx, blocks, got)
}

func (s *countedSource) Close() error {
	if s.opened.Load() {
		s.c.open.Add(-1)
	}
	return s.Source.Close()
}

// The grading flow asks a new challenge for every checksum the reference
// grader cannot read: 0x0a, 0x0d or 0x85 anywhere.
func TestUnreadableChecksums(t *testing.T) {
	for _, c := range []struct {
		sum  [4]byte
		want bool
	}{
		{[4]byte{1, 2, 3, 4}, false},
		{[4]byte{'\n', 2, 3, 4}, true},
		{[4]byte{1, '\r', 3, 4}, true},
		{[4]byte{1, 2, 3, '\r'}, true},
		{[4]byte{1, 2, 0x85, 4}, true},
		{[4]byte{0x84, 0x86, 0x0c, 0x0e}, false},
	} {
		if got := unreadable(c.sum); got != c.want {
			t.Errorf("unreadable(%x) = %v, want %v", c.sum, got, c.want)
		}
	}
}
