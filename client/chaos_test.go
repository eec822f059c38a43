package client_test

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalnet/shoal/client"
	"github.com/shoalnet/shoal/internal/cluster"
)

// TestChaos downloads 256 MiB from 8 peers at once, of which 2 lie about
// chunk bytes, 2 stall, and 2 are killed part way: the file still arrives
// byte-identical from the honest two and whoever else is left, and every
// fault was met and handled as its kind demands.
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
	var kills atomic.Int32
	for k := 4; k < 6; k++ { // killed once they served 8 chunks
		var served atomic.Int32
		hooks[k] = func(_ int, data []byte) []byte {
			if served.Add(1) == 8 {
				kills.Add(1)
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
	rep, err := f.download(t, testCtx(t), client.Config{Peers: 8, StallTimeout: time.Second}, out)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, out, f.data)
	byAddr := map[string]client.PeerReport{}
	for _, p := range rep.Peers {
		byAddr[p.Addr] = p
	}
	want := []client.DropReason{client.DropCorrupt, client.DropCorrupt, client.DropStalled, client.DropStalled}
	for k, p := range f.c.Peers[:6] {
		r, tried := byAddr[p.Addr()]
		switch {
		case !tried:
			t.Errorf("faulty peer %d (%s) was never tried: its fault was not met", k, p.Addr())
		case k < 4 && (r.Dropped != want[k] || r.Chunks > 0):
			t.Errorf("peer %d: dropped %q with %d chunks credited; want %q and none", k, r.Dropped, r.Chunks, want[k])
		case k >= 4 && (r.Dropped != client.DropUnreachable || r.Chunks == 0):
			t.Errorf("killed peer %d: %+v; want chunks before the kill credited, then dropped as unreachable", k, r)
		}
	}
	if kills.Load() != 2 {
		t.Errorf("%d peers killed, want 2", kills.Load())
	}
	for _, p := range f.c.Peers[6:] {
		if r := byAddr[p.Addr()]; r.Dropped != "" {
			t.Errorf("honest peer dropped: %+v", r)
		}
	}
	t.Logf("%.1fs, %d peers tried, %d retries", rep.Seconds, len(rep.Peers), rep.Retries)
}
