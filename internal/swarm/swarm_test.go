package swarm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/internal/harness"
	"github.com/shoalnet/shoal/internal/swarm"
	"github.com/shoalnet/shoal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// onceFiles serves each chunk once, then says it does not hold it (any
// more); after
// every chunk went out once it calls done (the seeder leaves).
type onceFiles struct {
	server.StoreFiles
	mu     sync.Mutex
	served map[int]bool
	total  int
	done   func()
}

func (o *onceFiles) OpenChunks(id chunkstore.ID) (server.ChunkReader, error) {
	r, err := o.StoreFiles.OpenChunks(id)
	if err != nil {
		return nil, err
	}
	return onceReader{r, o}, nil
}

type onceReader struct {
	server.ChunkReader
	o *onceFiles
}

func (r onceReader) ReadChunk(i int, buf []byte) ([]byte, error) {
	r.o.mu.Lock()
	defer r.o.mu.Unlock()
	if r.o.served[i] {
		return nil, fmt.Errorf("chunk %d already seeded: %w", i, chunkstore.ErrChunkNotHeld)
	}
	b, err := r.ChunkReader.ReadChunk(i, buf)
	if err == nil {
		r.o.served[i] = true
		if len(r.o.served) == r.o.total {
			go r.o.done()
		}
	}
	return b, err
}

// downloader runs one serving download in the background.
type downloader struct {
	out  string
	rep  *client.Report
	err  error
	done chan struct{}
}

func startDownloaders(t *testing.T, ctx context.Context, registry, name string, n int, rate int64, completed func(), tweak func(k int, cfg *swarm.Config) context.Context) []*downloader {
	t.Helper()
	var ds []*downloader
	for k := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(registry, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		d := &downloader{out: filepath.Join(t.TempDir(), fmt.Sprintf("dl-%d.bin", k)), done: make(chan struct{})}
		ds = append(ds, d)
		cfg := swarm.Config{
			Download:   client.Config{Peers: n + 1, StallTimeout: 10 * time.Second},
			Discoverer: &client.Registry{Target: name, Conn: cc},
			Out:        d.out, Listener: lis, Registry: registry, Rate: rate,
			PeerID:    fmt.Sprintf("downloader-%d", k),
			Completed: func(*client.Report) { completed() },
		}
		dctx := ctx
		if tweak != nil {
			dctx = tweak(k, &cfg)
		}
		go func() {
			defer close(d.done)
			d.rep, d.err = swarm.Get(dctx, cfg)
		}()
	}
	return ds
}

func TestSeederUploadsOnceThenLeaves(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "s.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := chunkstore.Open(chunkstore.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, _ := st.ManifestByName("s.bin")
	var c *cluster.Cluster
	left := make(chan struct{})
	seeder := &onceFiles{StoreFiles: server.StoreFiles{Store: st}, served: map[int]bool{}, total: m.NumChunks(),
		done: func() { c.Stop(c.Peers[0]); close(left) }}
	c, err = cluster.Start(context.Background(), cluster.Config{Peers: []cluster.PeerSpec{{
		Files: seeder, Rate: 8 << 20,
		Holdings: func() []server.FileInfo { return []server.FileInfo{{ID: m.ID, Name: m.Name, Size: m.Size}} },
	}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const n = 4
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var finished atomic.Int32
	allDone := make(chan struct{})
	ds := startDownloaders(t, ctx, c.Registry.Addr(), "s.bin", n, 0, func() {
		if finished.Add(1) == n {
			close(allDone)
		}
	}, nil)
	select {
	case <-allDone:
	case <-ctx.Done():
		t.Fatalf("only %d of %d downloaders finished", finished.Load(), n)
	}
	cancel() // stop seeding
	for k, d := range ds {
		<-d.done
		if d.err != nil {
			t.Fatalf("downloader %d: %v", k, d.err)
		}
		got, err := os.ReadFile(d.out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("downloader %d: file differs (%v)", k, err)
		}
	}
	select {
	case <-left:
	default:
		t.Fatal("the seeder never sent every chunk")
	}
	seeder.mu.Lock()
	defer seeder.mu.Unlock()
	if len(seeder.served) != m.NumChunks() {
		t.Fatalf("seeder served %d distinct chunks of %d", len(seeder.served), m.NumChunks())
	}
	var fromPeers int64
	for _, d := range ds {
		for _, p := range d.rep.Peers {
			if p.Addr != c.Peers[0].Addr() {
				fromPeers += p.Bytes
			}
		}
	}
	// The seeder sent the file once; everything else moved between peers.
	if want := int64(n-1) * int64(len(data)); fromPeers != want {
		t.Errorf("%d bytes moved between downloaders, want %d", fromPeers, want)
	}
}

func TestDownloaderLeavingHalfWayDoesNotStopOthers(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "h.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// A slow seeder: the downloaders need each other to finish soon.
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: []cluster.PeerSpec{{Rate: 4 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 4
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var finished atomic.Int32
	allDone := make(chan struct{})
	leaverCtx, leave := context.WithCancel(ctx)
	defer leave()
	ds := startDownloaders(t, ctx, c.Registry.Addr(), "h.bin", n, 0, func() {
		if finished.Add(1) == n-1 {
			close(allDone)
		}
	}, func(k int, cfg *swarm.Config) context.Context {
		if k != 0 {
			return ctx
		}
		// Downloader 0 quits (Ctrl-C) once it holds half the chunks.
		cfg.Download.OpenPart = func(p string) (client.PartFile, error) {
			return harness.OpenAfterWrites(p, 32, leave)
		}
		return leaverCtx
	})
	<-ds[0].done
	if ds[0].err == nil {
		t.Fatal("the leaving downloader finished instead of leaving")
	}
	select {
	case <-allDone:
	case <-ctx.Done():
		t.Fatalf("only %d of %d remaining downloaders finished", finished.Load(), n-1)
	}
	cancel()
	for k, d := range ds[1:] {
		<-d.done
		if d.err != nil {
			t.Fatalf("downloader %d: %v", k+1, d.err)
		}
		if got, _ := os.ReadFile(d.out); !bytes.Equal(got, data) {
			t.Fatalf("downloader %d: file differs", k+1)
		}
	}
}

func TestSuperSeederSendsAboutOnce(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "ss.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: []cluster.PeerSpec{{Rate: 4 << 20, SuperSeed: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 6
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var finished atomic.Int32
	allDone := make(chan struct{})
	ds := startDownloaders(t, ctx, c.Registry.Addr(), "ss.bin", n, 4<<20, func() {
		if finished.Add(1) == n {
			close(allDone)
		}
	}, nil)
	select {
	case <-allDone:
	case <-ctx.Done():
		t.Fatalf("only %d of %d downloaders finished", finished.Load(), n)
	}
	cancel()
	for k, d := range ds {
		<-d.done
		if got, _ := os.ReadFile(d.out); d.err != nil || !bytes.Equal(got, data) {
			t.Fatalf("downloader %d: %v or file differs", k, d.err)
		}
	}
	// End to end through gRPC and WatchHave: every peer capped alike, a
	// super-seeder sent 1.03 to 1.16 times the file here when the machine
	// was quiet (plain seeding 1.22 to 1.28), up to 1.25 under -race and
	// load; the 64-chunk file makes the final reveal-all a large share.
	// The bound catches a seeder that reveals everything at once; the
	// one-client-per-chunk rule is TestSuperSeedRevealsEachChunkToOneClient.
	sent := c.Peers[0].Stats().BytesServed.Load()
	if sent > int64(len(data))*3/2 {
		t.Errorf("seeder sent %.2f times the file", float64(sent)/float64(len(data)))
	}
}

// get --serve of a file already complete at its output seeds it: once the
// first seeder is gone, another download is served from it alone.
func TestCompleteFileIsSeeded(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 2<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, "c.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: []cluster.PeerSpec{{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := filepath.Join(t.TempDir(), "c.bin")
	if _, err := client.NewDownload(client.Config{}, &client.Registry{Target: "c.bin", Conn: cc}, out).Run(ctx); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seedCtx, stopSeeding := context.WithCancel(ctx)
	serving := make(chan struct{})
	seeded := make(chan error, 1)
	go func() {
		rep, err := swarm.Get(seedCtx, swarm.Config{
			Discoverer: &client.Registry{Target: "c.bin", Conn: cc}, Out: out, Listener: lis, Registry: c.Registry.Addr(),
			PeerID: "reseeder", Node: func(n *server.Node) { <-n.Announced(); close(serving) },
		})
		if err == nil && !rep.AlreadyDone {
			err = errors.New("the complete file was fetched again")
		}
		seeded <- err
	}()
	select {
	case <-serving:
	case err := <-seeded:
		t.Fatalf("get --serve of a complete file returned instead of seeding: %v", err)
	}
	c.Stop(c.Peers[0]) // the reseeder is now the only holder
	again := filepath.Join(t.TempDir(), "again.bin")
	rep, err := client.NewDownload(client.Config{}, &client.Registry{Target: "c.bin", Conn: cc}, again).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(again); !bytes.Equal(got, data) || len(rep.Peers) != 1 || rep.Peers[0].ID != "reseeder" {
		t.Fatalf("not served by the reseeder: %+v", rep.Peers)
	}
	stopSeeding()
	if err := <-seeded; err != nil {
		t.Fatal(err)
	}
}

// Downloaders of a folder serve each other its files' chunks: each gets
// the folder whole while the slow seeder sends it well under once per
// downloader.
func TestFolderSwarm(t *testing.T) {
	dir := t.TempDir()
	var total int64
	for k := range 54 {
		size := 3000 + k
		name := fmt.Sprintf("docs/n%02d.txt", k)
		if k < 4 {
			size, name = 2<<20, fmt.Sprintf("data/part%d.bin", k)
		}
		data := make([]byte, size)
		rand.Read(data)
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(size)
	}
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: []cluster.PeerSpec{{Rate: 4 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 3
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var finished atomic.Int32
	allDone := make(chan struct{})
	ds := startDownloaders(t, ctx, c.Registry.Addr(), "./", n, 0, func() {
		if finished.Add(1) == n {
			close(allDone)
		}
	}, func(k int, cfg *swarm.Config) context.Context {
		cfg.Folder, cfg.FolderName = cfg.Discoverer.(*client.Registry), "./"
		cfg.Out = strings.TrimSuffix(cfg.Out, ".bin")
		return ctx
	})
	select {
	case <-allDone:
	case <-ctx.Done():
		t.Fatalf("only %d of %d downloaders finished", finished.Load(), n)
	}
	cancel()
	for k, d := range ds {
		<-d.done
		if d.err != nil {
			t.Fatalf("downloader %d: %v", k, d.err)
		}
		out := strings.TrimSuffix(d.out, ".bin")
		err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			want, _ := os.ReadFile(p)
			if got, _ := os.ReadFile(filepath.Join(out, rel)); !bytes.Equal(got, want) {
				return fmt.Errorf("%s differs", rel)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("downloader %d: %v", k, err)
		}
	}
	sent := c.Peers[0].Stats().BytesServed.Load()
	if sent >= 2*total {
		t.Errorf("the seeder sent %d bytes for a %d-byte folder and %d downloaders: they did not serve each other", sent, total, n)
	}
	t.Logf("seeder sent %.2f F to %d downloaders", float64(sent)/float64(total), n)
}
