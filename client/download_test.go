package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/internal/harness"
	"github.com/shoalnet/shoal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hookFiles wraps a peer's files: onChunk runs before each chunk is read
// and may change the bytes (a lying peer) or act on the test (kill a peer).
type hookFiles struct {
	server.StoreFiles
	onChunk func(i int, data []byte) []byte
}

func (h hookFiles) OpenChunks(id chunkstore.ID) (server.ChunkReader, error) {
	r, err := h.StoreFiles.OpenChunks(id)
	if err != nil {
		return nil, err
	}
	return hookReader{r, h.onChunk}, nil
}

type hookReader struct {
	server.ChunkReader
	onChunk func(int, []byte) []byte
}

func (r hookReader) ReadChunk(i int, buf []byte) ([]byte, error) {
	b, err := r.ChunkReader.ReadChunk(i, buf)
	if err != nil {
		return nil, err
	}
	return r.onChunk(i, b), nil
}

// fixture is a folder with one random file and a cluster serving it.
type fixture struct {
	dir, name string
	data      []byte
	c         *cluster.Cluster
}

func newFixture(t *testing.T, size int) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), name: "file.bin", data: make([]byte, size)}
	rand.Read(f.data)
	if err := os.WriteFile(filepath.Join(f.dir, f.name), f.data, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// start runs a registry and one peer per spec; a spec whose Files is a
// hook gets the fixture's store under it.
func (f *fixture) start(t *testing.T, specs []cluster.PeerSpec, hooks map[int]func(int, []byte) []byte) *cluster.Cluster {
	t.Helper()
	st, err := chunkstore.Open(chunkstore.Config{Dir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	holdings := server.StoreFiles{Store: st}.Holdings
	for i := range specs {
		var files server.Files = server.StoreFiles{Store: st}
		if h := hooks[i]; h != nil {
			files = hookFiles{server.StoreFiles{Store: st}, h}
		}
		specs[i].Files, specs[i].Holdings = files, holdings
	}
	c, err := cluster.Start(context.Background(), cluster.Config{Peers: specs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.c = c
	return c
}

func (f *fixture) download(t *testing.T, ctx context.Context, cfg client.Config, out string) (*client.Report, error) {
	t.Helper()
	return download(t, ctx, f.c.Registry.Addr(), f.name, cfg, out)
}

func download(t testing.TB, ctx context.Context, registry, target string, cfg client.Config, out string) (*client.Report, error) {
	t.Helper()
	cc, err := grpc.NewClient(registry, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	return client.NewDownload(cfg, &client.Registry{Target: target, Conn: cc}, out).Run(ctx)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the original (%d vs %d bytes)", path, len(got), len(want))
	}
	if _, err := os.Stat(path + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.part left behind: %v", path, err)
	}
}

func noFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists after a failed download: %v", path, err)
	}
}

func TestFivePeersFastOnesDoMore(t *testing.T) {
	f := newFixture(t, 24<<20)
	specs := []cluster.PeerSpec{{}, {}, {}, {}, {Rate: 1 << 20}}
	f.start(t, specs, nil)
	out := filepath.Join(t.TempDir(), "out.bin")
	rep, err := f.download(t, testCtx(t), client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	if rep.BytesFetched != int64(len(f.data)) || len(rep.Peers) != 5 {
		t.Fatalf("fetched %d bytes from %d peers", rep.BytesFetched, len(rep.Peers))
	}
	slow := f.c.Peers[4].Addr()
	var slowChunks, minFast int
	minFast = 1 << 30
	for _, p := range rep.Peers {
		if p.Addr == slow {
			slowChunks = p.Chunks
		} else {
			minFast = min(minFast, p.Chunks)
		}
	}
	if slowChunks >= minFast {
		t.Errorf("slow peer served %d chunks, fastest-but-least fast peer %d: %+v", slowChunks, minFast, rep.Peers)
	}
}

func TestKilledPeersAreReplaced(t *testing.T) {
	f := newFixture(t, 16<<20)
	specs := make([]cluster.PeerSpec, 7)
	for i := range specs {
		specs[i].Rate = 16 << 20 // slow enough that the kills land mid-download
	}
	// The first two peers to serve their third chunk die on the spot.
	var kills atomic.Int32
	hooks := map[int]func(int, []byte) []byte{}
	for k := range specs {
		var n atomic.Int32
		hooks[k] = func(_ int, data []byte) []byte {
			if n.Add(1) == 3 && kills.Add(1) <= 2 {
				go f.c.Peers[k].Kill()
			}
			return data
		}
	}
	f.start(t, specs, hooks)
	out := filepath.Join(t.TempDir(), "out.bin")
	rep, err := f.download(t, testCtx(t), client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	dropped := 0
	for _, p := range rep.Peers {
		if p.Dropped != "" {
			dropped++
		}
	}
	if kills.Load() < 2 || dropped != 2 || len(rep.Peers) != 7 {
		t.Errorf("%d kills; want 2 dropped and replaced: %d peers tried, %d dropped: %+v", kills.Load(), len(rep.Peers), dropped, rep.Peers)
	}
}

func TestLyingPeerIsDropped(t *testing.T) {
	f := newFixture(t, 8<<20)
	specs := make([]cluster.PeerSpec, 5)
	hooks := map[int]func(int, []byte) []byte{2: func(_ int, data []byte) []byte {
		data[len(data)/2] ^= 0xFF
		return data
	}}
	f.start(t, specs, hooks)
	out := filepath.Join(t.TempDir(), "out.bin")
	rep, err := f.download(t, testCtx(t), client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	liar := f.c.Peers[2].Addr()
	for _, p := range rep.Peers {
		if p.Addr == liar && (p.Chunks != 0 || p.Dropped != client.DropCorrupt) {
			t.Errorf("lying peer: %+v", p)
		}
		if p.Addr != liar && p.Dropped != "" {
			t.Errorf("honest peer dropped: %+v", p)
		}
	}
}

func TestResumeFetchesOnlyMissingChunks(t *testing.T) {
	f := newFixture(t, 16<<20)
	specs := make([]cluster.PeerSpec, 5)
	for i := range specs {
		specs[i].Rate = 8 << 20
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	f.start(t, specs, nil)
	out := filepath.Join(t.TempDir(), "out.bin")
	// Cancel, as Ctrl-C would, once five chunks are on disk.
	cfg := client.Config{OpenPart: func(p string) (client.PartFile, error) {
		return harness.OpenAfterWrites(p, 5, cancel)
	}}
	if _, err := f.download(t, ctx, cfg, out); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v", err)
	}
	noFile(t, out)
	rep, err := f.download(t, testCtx(t), client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	if rep.BytesResumed == 0 || rep.BytesResumed+rep.BytesFetched != int64(len(f.data)) {
		t.Fatalf("resumed %d + fetched %d, want a non-zero resume summing to %d", rep.BytesResumed, rep.BytesFetched, len(f.data))
	}
	t.Logf("first run kept %d bytes; the rerun fetched %d", rep.BytesResumed, rep.BytesFetched)
	// A third run finds the file complete and fetches nothing.
	rep, err = f.download(t, testCtx(t), client.Config{}, out)
	if err != nil || !rep.AlreadyDone || rep.BytesFetched != 0 {
		t.Fatalf("rerun over a complete file: %+v, %v", rep, err)
	}
}

// fullDisk fails writes once limit bytes were written.
type fullDisk struct {
	*os.File
	left atomic.Int64
}

func (d *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.left.Add(-int64(len(p))) < 0 {
		return 0, &os.PathError{Op: "write", Path: d.Name(), Err: syscall.ENOSPC}
	}
	return d.File.WriteAt(p, off)
}

func TestFailuresLeaveNoFile(t *testing.T) {
	f := newFixture(t, 4<<20)
	f.start(t, make([]cluster.PeerSpec, 3), nil)
	dir := t.TempDir()
	short := client.Config{NoPeerTimeout: 300 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

	out := filepath.Join(dir, "a")
	_, err := download(t, testCtx(t), f.c.Registry.Addr(), "no-such-file", short, out)
	if !errors.Is(err, client.ErrNotFound) {
		t.Errorf("unknown file: %v", err)
	} else if msg := err.Error(); !strings.Contains(msg, `"no-such-file"`) || strings.Count(msg, client.ErrNotFound.Error()) != 1 {
		t.Errorf("unknown file: %q names the file and says %q once", msg, client.ErrNotFound)
	}
	noFile(t, out)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := lis.Addr().String()
	lis.Close()
	if _, err := download(t, testCtx(t), down, f.name, short, out); !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("registry down: %v", err)
	}
	noFile(t, out)

	if _, err := f.download(t, testCtx(t), short, filepath.Join(dir, "missing", "a")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing folder: %v", err)
	}

	full := short
	full.OpenPart = func(p string) (client.PartFile, error) {
		file, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		d := &fullDisk{File: file}
		d.left.Store(1 << 20)
		return d, nil
	}
	if _, err := f.download(t, testCtx(t), full, out); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("disk full: %v", err)
	}
	noFile(t, out)

	other := []byte("another file")
	if err := os.WriteFile(out, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.download(t, testCtx(t), short, out); !errors.Is(err, client.ErrExists) {
		t.Errorf("existing output: %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, other) {
		t.Error("existing output was changed without Force")
	}
	force := short
	force.Force = true
	if _, err := f.download(t, testCtx(t), force, out); err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
}

func TestAllPeersGoneFailsAndKeepsPart(t *testing.T) {
	f := newFixture(t, 8<<20)
	specs := make([]cluster.PeerSpec, 3)
	for i := range specs {
		specs[i].Rate = 8 << 20
	}
	var served atomic.Int32
	hooks := map[int]func(int, []byte) []byte{}
	for k := range specs {
		hooks[k] = func(_ int, data []byte) []byte {
			if served.Add(1) == 4 {
				for _, p := range f.c.Peers {
					go p.Kill()
				}
			}
			return data
		}
	}
	f.start(t, specs, hooks)
	out := filepath.Join(t.TempDir(), "out.bin")
	_, err := f.download(t, testCtx(t), client.Config{NoPeerTimeout: 500 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, out)
	if !errors.Is(err, client.ErrNoPeers) {
		t.Fatalf("all peers gone: %v", err)
	}
	noFile(t, out)
	if fi, err := os.Stat(out + ".part"); err != nil || fi.Size() != int64(len(f.data)) {
		t.Fatalf("part file not kept for a resume: %v", err)
	}
}

func TestStallingPeerLosesItsChunks(t *testing.T) {
	f := newFixture(t, 16<<20)
	release := make(chan struct{})
	var stalls atomic.Int32
	hooks := map[int]func(int, []byte) []byte{1: func(_ int, data []byte) []byte {
		stalls.Add(1)
		<-release // never answers while the download runs
		return data
	}}
	// The honest peers are capped so that the download (about 4 s)
	// outlasts the stall timeout twice and the endgame does not hide the
	// stall, while one of their chunks (256 KiB at 1 MiB/s per request)
	// stays far under it even on a loaded machine.
	f.start(t, []cluster.PeerSpec{{Rate: 2 << 20}, {}, {Rate: 2 << 20}}, hooks)
	t.Cleanup(func() { close(release) }) // before the cluster stops
	out := filepath.Join(t.TempDir(), "out.bin")
	rep, err := f.download(t, testCtx(t), client.Config{StallTimeout: 2 * time.Second}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	staller := f.c.Peers[1].Addr()
	for _, p := range rep.Peers {
		if p.Addr == staller && p.Dropped != client.DropStalled {
			t.Errorf("stalling peer not dropped: %+v", p)
		}
	}
	if stalls.Load() == 0 {
		t.Fatal("the stalling peer was never asked")
	}
}

func TestEndgameDuplicatesSlowLastChunks(t *testing.T) {
	f := newFixture(t, 4<<20)
	// One peer crawls: whatever it holds at the end is fetched again from
	// the fast one, and the download does not wait for it.
	specs := []cluster.PeerSpec{{}, {Rate: 64 << 10}}
	f.start(t, specs, nil)
	out := filepath.Join(t.TempDir(), "out.bin")
	rep, err := f.download(t, testCtx(t), client.Config{Peers: 2}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	// At 64 KiB/s the slow peer would need 1 s per 64 KiB chunk; the
	// fast peer must have taken over everything the slow one held.
	slow := f.c.Peers[1].Addr()
	for _, p := range rep.Peers {
		if p.Addr == slow && p.Chunks > 2 {
			t.Errorf("slow peer wrote %d chunks; the endgame should have raced it: %+v", p.Chunks, rep.Peers)
		}
	}
}

// TestResumeAfterDirectWrites cancels a download whose chunks went to disk
// with O_DIRECT, then resumes it: the chunks the first run reported
// verified and written are not fetched again.
func TestResumeAfterDirectWrites(t *testing.T) {
	f := newFixture(t, 16<<20)
	specs := make([]cluster.PeerSpec, 3)
	for i := range specs {
		specs[i].Rate = 8 << 20
	}
	f.start(t, specs, nil)
	out := filepath.Join(t.TempDir(), "out.bin")
	cc, err := grpc.NewClient(f.c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	d := client.NewDownload(client.Config{Direct: true}, &client.Registry{Target: f.name, Conn: cc}, out)
	var written int
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-d.Ready():
		case <-ctx.Done():
			return
		}
		d.WatchHave(ctx, func(_ []bool, added []int, _ bool) error {
			if written += len(added); written >= 10 {
				cancel() // as Ctrl-C would, once ten chunks are on disk
			}
			return nil
		})
	}()
	if _, err := d.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v", err)
	}
	<-watched
	noFile(t, out)
	rep, err := f.download(t, testCtx(t), client.Config{}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	chunk := int64(chunkstore.ChunkSizeFor(int64(len(f.data))))
	if rep.BytesResumed < 10*chunk || rep.BytesResumed+rep.BytesFetched != int64(len(f.data)) {
		t.Fatalf("resumed %d + fetched %d: want at least the 10 chunks (%d bytes) seen written, summing to %d", rep.BytesResumed, rep.BytesFetched, 10*chunk, len(f.data))
	}
}
