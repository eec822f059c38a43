// Command swarm measures how fast a swarm distributes one file: a seeder and
// N downloaders on loopback, every peer's uploads capped, each downloader
// serving what it has verified. It prints the peer-to-peer lower bound
//
//	D = max(F/u_s, N·F/(u_s + Σu_i))
//
// (downloads are not capped, so F/d_min does not bind), the measured time
// until the last downloader holds the whole file, their ratio, and the
// client-server time N·F/u_s for comparison.
//
//	go run ./bench/swarm -n 1,4,8,16,32 -size 200 -rate 5
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/internal/swarm"
	"github.com/shoalnet/shoal/server"
)

func main() {
	var (
		ns    = flag.String("n", "1,4,8,16", "downloader counts to run, comma-separated")
		size  = flag.Int64("size", 200, "file size F in MiB")
		rate  = flag.Float64("rate", 5, "upload cap of every peer, seeder included, in MiB/s")
		peers = flag.Int("peers", 0, "peers each downloader fetches from at once (0: all others, at most 16)")
		super = flag.Bool("super-seed", true, "the seeder reveals each chunk to one downloader until all went out once")
	)
	flag.BoolVar(&trace, "trace", false, "print, every second on stderr, what the seeder and the downloaders sent and how many completed")
	flag.Parse()
	if err := run(*ns, *size<<20, int64(*rate*(1<<20)), *peers, *super); err != nil {
		fmt.Fprintln(os.Stderr, "swarm:", err)
		os.Exit(1)
	}
}

// trace prints a timeline of each swarm.
var trace bool

func run(ns string, size, rate int64, peers int, super bool) error {
	dir, err := os.MkdirTemp("", "shoal-swarm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "seed")
	if err := os.Mkdir(src, 0o755); err != nil {
		return err
	}
	if err := writeRandom(filepath.Join(src, "swarm.bin"), size); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	defer tw.Flush()
	fmt.Fprintf(tw, "N\tF (MiB)\tcap (MiB/s)\tbound D (s)\tmeasured (s)\tmeasured/D\tseeder sent/F\tclient-server N·F/u_s (s)\t\n")
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -n entry %q", f)
		}
		fmt.Fprintf(os.Stderr, "running N=%d...\n", n)
		took, seeded, err := once(dir, src, n, size, rate, peers, super)
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
		F, u := float64(size), float64(rate)
		d := max(F/u, float64(n)*F/(u+float64(n)*u))
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%.1f\t%.3f\t%.2f\t%.1f\t\n", n, size>>20, u/(1<<20), d, took.Seconds(), took.Seconds()/d, float64(seeded)/F, float64(n)*F/u)
	}
	return nil
}

// once runs one swarm of n downloaders and returns the time until the last
// one completed and the bytes the seeder sent.
func once(dir, src string, n int, size, rate int64, peers int, super bool) (time.Duration, int64, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Config{Dir: src, Peers: []cluster.PeerSpec{{Rate: rate, SuperSeed: super}}})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if peers <= 0 {
		peers = min(n, 16)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		last     time.Time
		finished int
		errs     []error
		nodes    = make([]*server.Node, n)
	)
	allDone := make(chan struct{})
	start := time.Now()
	for k := range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		cc, err := grpc.NewClient(c.Registry.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return 0, 0, err
		}
		defer cc.Close()
		out := filepath.Join(dir, fmt.Sprintf("n%d-dl%d.bin", n, k))
		defer os.Remove(out)
		wg.Go(func() {
			_, err := swarm.Get(ctx, swarm.Config{
				Download:   client.Config{Peers: peers},
				Discoverer: &client.Registry{Target: "swarm.bin", Conn: cc},
				Out:        out, Listener: lis, Registry: c.Registry.Addr(), Rate: rate,
				PeerID: fmt.Sprintf("dl-%d", k),
				Node: func(nd *server.Node) {
					mu.Lock()
					nodes[k] = nd
					mu.Unlock()
				},
				Completed: func(*client.Report) {
					mu.Lock()
					defer mu.Unlock()
					last = time.Now()
					if finished++; finished == n {
						close(allDone)
					}
				},
			})
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				cancel()
			}
		})
	}
	if trace {
		go timeline(ctx, start, size, rate, c.Peers[0], func() ([]*server.Node, int) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(nodes), finished
		})
	}
	select {
	case <-allDone:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	if len(errs) > 0 {
		return 0, 0, errs[0]
	}
	return last.Sub(start), c.Peers[0].Stats().BytesServed.Load(), nil
}

func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for left := size; left > 0; left -= int64(len(buf)) {
		buf[0]++
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// timeline prints every second the seeder's and the downloaders' upload in
// the last second, as fractions of a peer's cap, the seeder's total in
// files, and how many downloaders completed.
func timeline(ctx context.Context, start time.Time, size, rate int64, seeder *server.Node, state func() ([]*server.Node, int)) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastSeed, lastDl int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		nodes, finished := state()
		seed := seeder.Stats().BytesServed.Load()
		var dl int64
		for _, nd := range nodes {
			if nd != nil {
				dl += nd.Stats().BytesServed.Load()
			}
		}
		fmt.Fprintf(os.Stderr, "t=%3.0fs seeder %.2f cap (%.3f F in all)  downloaders %.2f caps of %d  completed %d\n",
			time.Since(start).Seconds(), float64(seed-lastSeed)/float64(rate), float64(seed)/float64(size),
			float64(dl-lastDl)/float64(rate), len(nodes), finished)
		lastSeed, lastDl = seed, dl
	}
}
