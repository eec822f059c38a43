package client_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
	"github.com/shoalnet/shoal/internal/harness"
)

// cpuSeconds is the process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// benchCluster writes a size-byte file and serves it from peers peers
// capped at rate bytes/s each (0: unlimited).
func benchCluster(b *testing.B, size int64, specs []cluster.PeerSpec) *cluster.Cluster {
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, "big.bin"))
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for left := size; left > 0; left -= int64(len(buf)) {
		buf[0]++
		f.Write(buf[:min(left, int64(len(buf)))])
	}
	f.Close()
	syscall.Sync() // the source's dirty pages must not slow the download's writes
	c, err := cluster.Start(context.Background(), cluster.Config{Dir: dir, Peers: specs})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func runBenchDownloads(b *testing.B, c *cluster.Cluster, size int64, cfg client.Config) {
	out := filepath.Join(benchOutDir(b), "out.bin")
	stop := harness.HeapPeak()
	cpu0 := cpuSeconds()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		os.Remove(out)
		rep, err := download(b, context.Background(), c.Registry.Addr(), "big.bin", cfg, out)
		if err != nil {
			b.Fatal(err)
		}
		if rep.BytesFetched != size {
			b.Fatalf("fetched %d of %d bytes", rep.BytesFetched, size)
		}
	}
	b.StopTimer()
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(stop())/(1<<20), "peak-heap-MiB")
}

// BenchmarkDownload fetches a file from 5 unlimited peers on loopback,
// written to disk and verified. Peers and client share this process, so
// cpu-s/op and peak-heap-MiB count both sides; bench/download measures
// `shoal get` alone.
func BenchmarkDownload(b *testing.B) {
	for _, size := range []int64{256 << 20, 1 << 30} {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			c := benchCluster(b, size, make([]cluster.PeerSpec, 5))
			runBenchDownloads(b, c, size, client.Config{})
		})
	}
}

// BenchmarkDownloadCapped fetches 40 MiB from 5 peers capped at 2 MiB/s
// each; efficiency-% is the share of the caps' 10 MiB/s sum reached. With
// one peer 10x slower, ideal-% compares the time with file size / sum of
// rates.
func BenchmarkDownloadCapped(b *testing.B) {
	const size = 40 << 20
	cases := []struct {
		name  string
		rates []int64
	}{
		{"equal", []int64{2 << 20, 2 << 20, 2 << 20, 2 << 20, 2 << 20}},
		{"one-10x-slower", []int64{2 << 20, 2 << 20, 2 << 20, 2 << 20, 200 << 10}},
	}
	for _, cs := range cases {
		b.Run(cs.name, func(b *testing.B) {
			specs := make([]cluster.PeerSpec, len(cs.rates))
			var sum int64
			for i, r := range cs.rates {
				specs[i].Rate = r
				sum += r
			}
			c := benchCluster(b, size, specs)
			start := time.Now()
			runBenchDownloads(b, c, size, client.Config{})
			per := time.Since(start).Seconds() / float64(b.N)
			ideal := float64(size) / float64(sum)
			b.ReportMetric(100*ideal/per, "ideal-%")
		})
	}
}

// BenchmarkDownloadFarCapped fetches 48 MiB from 5 capped peers each 50 ms
// away (each way), one of them slower: what the end of a download costs
// when every request waits a round trip. ideal-% compares the time with
// file size / sum of rates.
func BenchmarkDownloadFarCapped(b *testing.B) {
	const size = 48 << 20
	rates := []int64{4 << 20, 4 << 20, 4 << 20, 4 << 20, 1 << 20}
	specs := make([]cluster.PeerSpec, len(rates))
	var sum int64
	for i, r := range rates {
		specs[i] = cluster.PeerSpec{Rate: r, Advertise: newDelayProxy(b, 50*time.Millisecond).front}
		sum += r
	}
	c := benchCluster(b, size, specs)
	start := time.Now()
	runBenchDownloads(b, c, size, client.Config{})
	per := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(100*float64(size)/float64(sum)/per, "ideal-%")
}

// benchOutDir is where benchmarks write: $SHOAL_BENCH_OUT if set (to
// compare file systems), else a temporary folder.
func benchOutDir(b *testing.B) string {
	if d := os.Getenv("SHOAL_BENCH_OUT"); d != "" {
		return d
	}
	return b.TempDir()
}
