package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
	"github.com/shoalnet/shoal/internal/harness"
	"github.com/shoalnet/shoal/server"
)

// BenchmarkGetChunks streams a whole file from one peer over loopback in
// one GetChunks call per iteration. peak-heap-MiB is the highest live heap
// of client and server together during the run: it stays flat as the file
// grows.
func BenchmarkGetChunks(b *testing.B) {
	for _, size := range []int{64 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			dir := b.TempDir()
			f, err := os.Create(filepath.Join(dir, "big"))
			if err != nil {
				b.Fatal(err)
			}
			chunk := randBytes(1 << 20)
			for range size >> 20 {
				f.Write(chunk)
			}
			f.Close()
			cc, _ := startPeer(b, dir, server.DefaultPeerConfig())
			pc := shoalv1.NewPeerServiceClient(cc)
			ctx := context.Background()
			mr, err := pc.GetManifest(ctx, &shoalv1.GetManifestRequest{File: &shoalv1.GetManifestRequest_Name{Name: "big"}})
			if err != nil {
				b.Fatal(err)
			}
			n := uint32(len(mr.GetManifest().GetChunkHashes()))
			req := &shoalv1.GetChunksRequest{ContentId: mr.GetManifest().GetContentId(), Ranges: []*shoalv1.ChunkRange{{Start: 0, End: n}}}
			stop := harness.HeapPeak()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				stream, err := pc.GetChunks(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				got := 0
				for {
					msg, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					got += len(msg.GetData())
				}
				if got != size {
					b.Fatalf("got %d bytes, want %d", got, size)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(stop())/(1<<20), "peak-heap-MiB")
		})
	}
}
