package client

import (
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// A request to a peer far away asks for what it sends over two of its
// round trips, past MaxBatch; a near peer's stays within MaxBatch.
func TestBatchCoversTheRoundTrip(t *testing.T) {
	const chunk, chunks = 1 << 20, 1024
	hashes := make([][]byte, chunks)
	for i := range hashes {
		hashes[i] = make([]byte, 32)
	}
	m, err := chunkstore.NewManifest("f", chunks*chunk, chunk, hashes)
	if err != nil {
		t.Fatal(err)
	}
	d := &Download{cfg: Config{}.withDefaults(), lay: fileLayout(m)}
	const rate = 400e6
	var far, near peerState
	far.rate.Store(rate)
	far.delay.Store(int64(100 * time.Millisecond))
	near.rate.Store(rate)
	near.delay.Store(int64(200 * time.Microsecond))

	if got, want := d.batchBytes(&far), int64(rate*0.2); got != want {
		t.Errorf("far peer: a request of %d bytes, want %d (rate x 2 round trips)", got, want)
	}
	if got, want := d.batchBytes(&near), int64(d.cfg.MaxBatch*chunk); got != want {
		t.Errorf("near peer: a request of %d bytes, want MaxBatch's %d", got, want)
	}
}

// A far peer's wide window: 64 MiB for one peer alone (40 MB go out over a
// round trip of 100 ms at 400 MB/s), a fifth of it for each of five, never
// less than 4 MiB.
func TestWindowsShareABudget(t *testing.T) {
	for _, tc := range []struct {
		peers int
		want  int32
	}{{1, 64 << 20}, {5, 64 << 20 / 5}, {16, 4 << 20}, {64, 4 << 20}} {
		if got := windowFor(tc.peers); got != tc.want {
			t.Errorf("%d peers: window %d, want %d", tc.peers, got, tc.want)
		}
	}
}
