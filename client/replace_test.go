package client_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
)

// memSource serves chunks of data from memory, waiting delay per chunk.
type memSource struct {
	id      string
	data    []byte
	m       *chunkstore.Manifest
	delay   time.Duration
	mu      sync.Mutex
	fetched bool
}

func (s *memSource) ID() string   { return s.id }
func (s *memSource) Addr() string { return s.id }
func (s *memSource) Close() error { return nil }
func (s *memSource) Fetch(ctx context.Context, chunks []int, got func(int, [][]byte) error) error {
	s.mu.Lock()
	s.fetched = true
	s.mu.Unlock()
	for _, i := range chunks {
		t := time.NewTimer(s.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		off, n := s.m.ChunkBounds(i)
		if err := got(i, [][]byte{s.data[off : off+int64(n)]}); err != nil {
			return err
		}
	}
	return nil
}

// fastLater offers two slow sources first, then forecasts and hands out
// fast ones: a discoverer like the course tracker's.
type fastLater struct {
	data []byte
	m    *chunkstore.Manifest
	mu   sync.Mutex
	made []*memSource
}

func (f *fastLater) Manifest(context.Context) (*chunkstore.Manifest, error) { return f.m, nil }

func (f *fastLater) Discover(_ context.Context, exclude []string, limit int) ([]client.Source, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []client.Source
	for range limit {
		delay, kind := time.Millisecond, "fast"
		if len(f.made) < 2 {
			delay, kind = 20*time.Millisecond, "slow"
		}
		s := &memSource{id: fmt.Sprintf("%s-%d", kind, len(f.made)), data: f.data, m: f.m, delay: delay}
		f.made = append(f.made, s)
		out = append(out, s)
	}
	return out, nil
}

func (f *fastLater) Forecast([]string) (float64, bool) {
	return float64(f.m.ChunkSize) / time.Millisecond.Seconds(), true
}

func TestReplacementStartsTheChosenSource(t *testing.T) {
	const chunk = 16 << 10
	data := make([]byte, 400*chunk)
	for i := range data {
		data[i] = byte(i * 31)
	}
	m := &chunkstore.Manifest{Name: "f", Size: int64(len(data)), ChunkSize: chunk}
	for off := 0; off < len(data); off += chunk {
		m.Hashes = append(m.Hashes, sha256.Sum256(data[off:off+chunk]))
	}
	disc := &fastLater{data: data, m: m}
	out := filepath.Join(t.TempDir(), "out")
	cfg := client.Config{Peers: 2, MaxBatch: 1, StreamsPerPeer: 1, ReplaceSlowest: 20 * time.Millisecond}
	rep, err := client.NewDownload(cfg, disc, out).Run(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	disc.mu.Lock()
	defer disc.mu.Unlock()
	if len(disc.made) < 3 {
		t.Fatalf("only %d sources made: the slow ones were never replaced", len(disc.made))
	}
	// Every source handed out for a replacement must have been put to
	// work, not closed unused while the pool asked for another.
	for _, s := range disc.made {
		if !s.fetched {
			t.Errorf("source %s was chosen but never fetched from", s.id)
		}
	}
	var fast int
	for _, p := range rep.Peers {
		if p.ID[:4] == "fast" {
			fast += p.Chunks
		}
	}
	if fast < m.NumChunks()/2 {
		t.Errorf("fast sources fetched %d of %d chunks", fast, m.NumChunks())
	}
}
