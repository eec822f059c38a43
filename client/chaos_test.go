package client_test

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

// TestChaos downloads 256 MiB from 8 peers of which 2 lie about chunk
// bytes, 2 stall, and 2 are killed part way: the file still arrives
// byte-identical from the honest two and whoever else is left.
func TestChaos(t *testing.T) {
	f := newFixture(t, 256<<20)
	release := make(chan struct{})
	hooks := map[int]func(int, []byte) []byte{}
	for k := range 2 { // liars
		hooks[k] = func(_ int, data []byte) []byte {
			data[len(data)/3] ^= 0x5A
			return data
		}
	}
	for k := 2; k < 4; k++ { // stallers: answer nothing, hold the stream
		hooks[k] = func(_ int, data []byte) []byte {
			<-release
			return data
		}
	}
	for k := 4; k < 6; k++ { // killed once they served 8 chunks
		var served atomic.Int32
		hooks[k] = func(_ int, data []byte) []byte {
			if served.Add(1) == 8 {
				go f.c.Peers[k].Kill()
			}
			return data
		}
	}
	// The honest peers are capped so the download lasts long enough for
	// every fault to be met.
	specs := make([]cluster.PeerSpec, 8)
	for k := range specs {
		specs[k].Rate = 64 << 20
	}
	f.start(t, specs, hooks)
	t.Cleanup(func() { close(release) })
	out := filepath.Join(t.TempDir(), "chaos.bin")
	rep, err := f.download(t, testCtx(t), client.Config{StallTimeout: time.Second}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	byAddr := map[string]client.PeerReport{}
	for _, p := range rep.Peers {
		byAddr[p.Addr] = p
	}
	for k, p := range f.c.Peers[:6] {
		r, tried := byAddr[p.Addr()]
		if tried && k < 4 && (r.Dropped == "" || r.Chunks > 0) {
			t.Errorf("faulty peer %d (%s) kept or credited: %+v", k, p.Addr(), r)
		}
	}
	t.Logf("%.1fs, %d peers tried, %d retries", rep.Seconds, len(rep.Peers), rep.Retries)
}
