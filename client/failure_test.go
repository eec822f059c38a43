package client_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
)

// funcSource is a Source whose Fetch is a func field; fetches counts calls.
type funcSource struct {
	id      string
	partial bool // with have: a HaveSource
	have    []bool
	fetch   func(ctx context.Context, n int64, chunks []int, got func(int, [][]byte) error) error
	fetches atomic.Int64
}

func (s *funcSource) ID() string    { return s.id }
func (s *funcSource) Addr() string  { return s.id }
func (s *funcSource) Close() error  { return nil }
func (s *funcSource) Partial() bool { return s.partial }
func (s *funcSource) Fetch(ctx context.Context, chunks []int, got func(int, [][]byte) error) error {
	n := s.fetches.Add(1)
	return s.fetch(ctx, n, chunks, got)
}
func (s *funcSource) WatchHave(ctx context.Context, fn func([]bool, []int)) error {
	fn(s.have, nil)
	<-ctx.Done()
	return nil
}

// listDisc hands out its sources once each.
type listDisc struct {
	m    *chunkstore.Manifest
	mu   sync.Mutex
	srcs []client.Source
}

func (l *listDisc) Manifest(context.Context) (*chunkstore.Manifest, error) { return l.m, nil }
func (l *listDisc) Discover(_ context.Context, exclude []string, limit int) ([]client.Source, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []client.Source
	for _, s := range l.srcs {
		if len(out) < limit && !contains(exclude, s.ID()) {
			out = append(out, s)
		}
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// testFile is a file of n chunks of 1 KiB and its manifest.
func testFile(n int) ([]byte, *chunkstore.Manifest) {
	data := make([]byte, n<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	m := &chunkstore.Manifest{Name: "f", Size: int64(len(data)), ChunkSize: 1 << 10}
	for i := range n {
		m.Hashes = append(m.Hashes, sha256.Sum256(data[i<<10:(i+1)<<10]))
	}
	m.ID = chunkstore.ComputeID(m.Size, m.ChunkSize, m.Hashes)
	return data, m
}

// serve is an honest Fetch of data.
func serve(data []byte, m *chunkstore.Manifest) func(context.Context, int64, []int, func(int, [][]byte) error) error {
	return func(ctx context.Context, _ int64, chunks []int, got func(int, [][]byte) error) error {
		for _, i := range chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			off, n := m.ChunkBounds(i)
			if err := got(i, [][]byte{data[off : off+int64(n)]}); err != nil {
				return err
			}
		}
		return nil
	}
}

func fail(err error) func(context.Context, int64, []int, func(int, [][]byte) error) error {
	return func(context.Context, int64, []int, func(int, [][]byte) error) error { return err }
}

func peerReport(t *testing.T, rep *client.Report, id string) client.PeerReport {
	t.Helper()
	for _, p := range rep.Peers {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("peer %s never tried: %+v", id, rep.Peers)
	return client.PeerReport{}
}

// A peer that no longer holds the file (it changed under it) is dropped at
// its first answer, not asked for every chunk.
func TestPeerNotHoldingTheFileIsDropped(t *testing.T) {
	data, m := testFile(200)
	gone := &funcSource{id: "gone", fetch: fail(fmt.Errorf("chunks: %w", client.ErrNotFound))}
	good := &funcSource{id: "good", fetch: serve(data, m)}
	out := filepath.Join(t.TempDir(), "out")
	rep, err := client.NewDownload(client.Config{Peers: 2, MaxBatch: 1}, &listDisc{m: m, srcs: []client.Source{gone, good}}, out).Run(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if p := peerReport(t, rep, "gone"); p.Dropped != client.DropNotHeld {
		t.Errorf("gone: dropped %q, want %q", p.Dropped, client.DropNotHeld)
	}
	if n := gone.fetches.Load(); n > 2 { // at most its two open requests
		t.Errorf("a peer without the file was asked %d times", n)
	}
}

// A busy peer is backed off and used again, not dropped.
func TestBusyPeerIsBackedOffNotDropped(t *testing.T) {
	data, m := testFile(400)
	honest := serve(data, m)
	busy := &funcSource{id: "busy"}
	busy.fetch = func(ctx context.Context, n int64, chunks []int, got func(int, [][]byte) error) error {
		if n <= 3 {
			return fmt.Errorf("chunks: %w: 256 uploads under way", client.ErrBusy)
		}
		return honest(ctx, n, chunks, got)
	}
	slow := &funcSource{id: "slow"}
	slow.fetch = func(ctx context.Context, n int64, chunks []int, got func(int, [][]byte) error) error {
		t := time.NewTimer(5 * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		return honest(ctx, n, chunks, got)
	}
	out := filepath.Join(t.TempDir(), "out")
	cfg := client.Config{Peers: 2, MaxBatch: 1, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	rep, err := client.NewDownload(cfg, &listDisc{m: m, srcs: []client.Source{busy, slow}}, out).Run(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if p := peerReport(t, rep, "busy"); p.Dropped != "" || p.Chunks == 0 {
		t.Errorf("busy peer: %+v; want it backed off, then used", p)
	}
}

// A peer that stays busy through every back-off is dropped as busy.
func TestAlwaysBusyPeerIsDropped(t *testing.T) {
	_, m := testFile(50)
	busy := &funcSource{id: "busy", fetch: fail(client.ErrBusy)}
	cfg := client.Config{Peers: 1, MaxBatch: 1, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, NoPeerTimeout: 100 * time.Millisecond}
	rep, err := client.NewDownload(cfg, &listDisc{m: m, srcs: []client.Source{busy}}, filepath.Join(t.TempDir(), "out")).Run(testCtx(t))
	if !errors.Is(err, client.ErrNoPeers) {
		t.Fatalf("got %v, want ErrNoPeers", err)
	}
	if p := peerReport(t, rep, "busy"); p.Dropped != client.DropBusy {
		t.Errorf("always-busy peer: %+v", p)
	}
	if n := busy.fetches.Load(); n < 7 || n > 8 {
		t.Errorf("asked %d times; want its 6 back-offs and one more", n)
	}
}

// When every peer is connected but none holds a chunk still needed, the
// no-peer timeout still ends the download: it never waits for ever.
func TestNoPeerTimeoutFiresWhileWorkersWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  func() *funcSource
	}{
		{"partial peer with nothing", func() *funcSource {
			return &funcSource{id: "empty", partial: true, have: make([]bool, 20), fetch: fail(errors.New("never asked"))}
		}},
		{"peer lacking every chunk", func() *funcSource {
			return &funcSource{id: "lacking", fetch: fail(fmt.Errorf("chunks: %w", client.ErrChunkNotHeld))}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m := testFile(20)
			out := filepath.Join(t.TempDir(), "out")
			cfg := client.Config{Peers: 1, NoPeerTimeout: 200 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := client.NewDownload(cfg, &listDisc{m: m, srcs: []client.Source{tc.src()}}, out).Run(ctx)
			if !errors.Is(err, client.ErrNoPeers) {
				t.Fatalf("got %v, want ErrNoPeers", err)
			}
			noFile(t, out)
		})
	}
}

// A disk error ends the download at once, whatever the peers do.
func TestDiskErrorEndsTheDownload(t *testing.T) {
	data, m := testFile(20)
	good := &funcSource{id: "good", fetch: serve(data, m)}
	cfg := client.Config{Peers: 1, OpenPart: func(p string) (client.PartFile, error) {
		f, err := os.Create(p)
		return &fullDisk{File: f}, err
	}}
	_, err := client.NewDownload(cfg, &listDisc{m: m, srcs: []client.Source{good}}, filepath.Join(t.TempDir(), "out")).Run(testCtx(t))
	if !errors.Is(err, client.ErrDisk) {
		t.Fatalf("got %v, want ErrDisk", err)
	}
}

// MaxRate caps the download over all peers: 512 KiB at 256 KiB/s takes at
// least about 2 s, whatever the machine does, since a limit (or a loaded
// machine) only slows a download down.
func TestMaxRateCapsTheDownload(t *testing.T) {
	data, m := testFile(512) // 512 KiB in 1 KiB chunks
	var srcs []client.Source
	for k := range 3 {
		srcs = append(srcs, &funcSource{id: fmt.Sprint("p", k), fetch: serve(data, m)})
	}
	out := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	_, err := client.NewDownload(client.Config{Peers: 3, MaxRate: 256 << 10}, &listDisc{m: m, srcs: srcs}, out).Run(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if took := time.Since(start); took < 1900*time.Millisecond {
		t.Errorf("512 KiB at 256 KiB/s took %v; want at least 2 s", took)
	}
}

// syncCounter is a part file counting its syncs; the first fails with
// EIO when failFirst is set.
type syncCounter struct {
	*os.File
	failFirst bool
	syncs     atomic.Int32
}

func (f *syncCounter) Sync() error {
	if f.syncs.Add(1) == 1 && f.failFirst {
		return &os.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO}
	}
	return f.File.Sync()
}

// The part file is flushed to disk while the download goes on, every
// WritebackEvery bytes, so the fsync before the rename has only the tail
// to wait for.
func TestPartFileIsSyncedAsItFills(t *testing.T) {
	data, m := testFile(64) // 64 KiB in 1 KiB chunks
	var part *syncCounter
	cfg := client.Config{Peers: 1, WritebackEvery: 8 << 10, OpenPart: func(p string) (client.PartFile, error) {
		f, err := os.Create(p)
		part = &syncCounter{File: f}
		return part, err
	}}
	out := filepath.Join(t.TempDir(), "out")
	src := &funcSource{id: "p", fetch: serve(data, m)}
	if _, err := client.NewDownload(cfg, &listDisc{m: m, srcs: []client.Source{src}}, out).Run(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, data)
	if n := part.syncs.Load(); n < 2 {
		t.Errorf("%d syncs of the part file; want the final one and at least one while it filled", n)
	}
}

// A sync that failed in the background fails the download, though the
// final one succeeds: nothing is renamed into place that may not be on
// disk.
func TestBackgroundSyncFailureFailsTheDownload(t *testing.T) {
	data, m := testFile(64)
	cfg := client.Config{Peers: 1, WritebackEvery: 8 << 10, OpenPart: func(p string) (client.PartFile, error) {
		f, err := os.Create(p)
		return &syncCounter{File: f, failFirst: true}, err
	}}
	out := filepath.Join(t.TempDir(), "out")
	src := &funcSource{id: "p", fetch: serve(data, m)}
	_, err := client.NewDownload(cfg, &listDisc{m: m, srcs: []client.Source{src}}, out).Run(testCtx(t))
	if !errors.Is(err, client.ErrDisk) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("got %v, want ErrDisk from the background sync's EIO", err)
	}
	noFile(t, out)
}
