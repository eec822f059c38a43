package server

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestLeases(cfg LeaseConfig) (*Leases, *fakeClock) {
	clk := &fakeClock{now: time.Unix(1_000_000, 0)}
	cfg.Now = clk.Now
	if cfg.Lease == 0 {
		cfg.Lease = 30 * time.Second
	}
	return NewLeases(cfg), clk
}

func fileID(n int) chunkstore.ID { return chunkstore.ID{byte(n), byte(n >> 8), 7} }

func testPeer(n int, files ...int) Peer {
	p := Peer{ID: fmt.Sprintf("peer-%d", n), Addr: fmt.Sprintf("127.0.0.1:%d", 10000+n)}
	for _, f := range files {
		p.Files = append(p.Files, FileInfo{ID: fileID(f), Name: fmt.Sprintf("file-%d", f), Size: int64(f)})
	}
	return p
}

// secrets remembers each test registration's secret, as a peer would.
var secrets sync.Map // of secretKey -> string

type secretKey struct {
	l  *Leases
	id string
}

func mustAnnounce(t *testing.T, l *Leases, p Peer) {
	t.Helper()
	prev, _ := secrets.Load(secretKey{l, p.ID})
	s, _ := prev.(string)
	_, secret, err := l.Announce(p, s)
	if err != nil {
		t.Fatal(err)
	}
	secrets.Store(secretKey{l, p.ID}, secret)
}

func secretOf(l *Leases, id string) string {
	s, _ := secrets.Load(secretKey{l, id})
	str, _ := s.(string)
	return str
}

func holderCount(t *testing.T, l *Leases, f int) int {
	t.Helper()
	_, _, n, err := l.Lookup(fileID(f), "", false, 0, nil)
	if errors.Is(err, chunkstore.ErrNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLeaseExpiresAndRefreshes(t *testing.T) {
	l, clk := newTestLeases(LeaseConfig{Lease: 30 * time.Second})
	mustAnnounce(t, l, testPeer(1, 1))
	mustAnnounce(t, l, testPeer(2, 1))
	clk.Add(20 * time.Second)
	mustAnnounce(t, l, testPeer(1, 1)) // refresh: 30 s from now
	clk.Add(15 * time.Second)          // peer 2's lease ended 5 s ago
	if n := holderCount(t, l, 1); n != 1 {
		t.Fatalf("after peer 2 expired: %d holders, want 1", n)
	}
	clk.Add(14 * time.Second)
	if n := holderCount(t, l, 1); n != 1 {
		t.Fatalf("refreshed lease ended early: %d holders", n)
	}
	clk.Add(2 * time.Second)
	if n := holderCount(t, l, 1); n != 0 {
		t.Fatalf("killed peer still listed after its lease: %d holders", n)
	}
	if peers, files := l.Len(); peers != 0 || files != 0 {
		t.Fatalf("table not empty: %d peers, %d files", peers, files)
	}
}

func TestAnnounceReplacesFileList(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	mustAnnounce(t, l, testPeer(1, 1, 2))
	mustAnnounce(t, l, testPeer(1, 2, 3))
	if holderCount(t, l, 1) != 0 || holderCount(t, l, 2) != 1 || holderCount(t, l, 3) != 1 {
		t.Fatal("re-announce did not replace the file list")
	}
}

func TestLookupRandomHonoursExcludeAndLimit(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	for i := range 20 {
		mustAnnounce(t, l, testPeer(i, 1))
	}
	exclude := []string{"peer-0", "peer-1", "peer-2", "peer-3", "peer-4"}
	seen := map[string]int{}
	for range 200 {
		_, peers, holders, err := l.Lookup(fileID(1), "", false, 5, exclude)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) != 5 || holders != 20 {
			t.Fatalf("got %d peers of %d, want 5 of 20", len(peers), holders)
		}
		dup := map[string]bool{}
		for _, p := range peers {
			if dup[p.ID] {
				t.Fatalf("peer %s returned twice", p.ID)
			}
			dup[p.ID] = true
			seen[p.ID]++
		}
		for _, x := range exclude {
			if dup[x] {
				t.Fatalf("excluded peer %s returned", x)
			}
		}
	}
	if len(seen) != 15 {
		t.Errorf("200 random lookups reached %d of the 15 eligible peers", len(seen))
	}
	// Excluding all but two leaves exactly those two.
	var most []string
	for i := range 18 {
		most = append(most, fmt.Sprintf("peer-%d", i))
	}
	_, peers, _, err := l.Lookup(fileID(1), "", false, 5, most)
	if err != nil || len(peers) != 2 {
		t.Fatalf("with 18 excluded: %d peers, %v; want 2", len(peers), err)
	}
}

func TestLeaveIsImmediateAndOwned(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	mustAnnounce(t, l, testPeer(1, 1))
	mustAnnounce(t, l, testPeer(2, 1))
	if err := l.Leave("peer-1", secretOf(l, "peer-2")); !errors.Is(err, errNotOwner) {
		t.Fatalf("peer 2 removing peer 1: %v, want errNotOwner", err)
	}
	if err := l.Leave("peer-1", ""); !errors.Is(err, errNotOwner) {
		t.Fatalf("leave without the secret: %v, want errNotOwner", err)
	}
	if err := l.Leave("peer-1", secretOf(l, "peer-1")); err != nil {
		t.Fatal(err)
	}
	if n := holderCount(t, l, 1); n != 1 {
		t.Fatalf("after leave: %d holders, want 1", n)
	}
	if err := l.Leave("peer-1", secretOf(l, "peer-1")); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("second leave: %v", err)
	}
	// Another peer cannot take over a live registration, at any address.
	hijack := testPeer(2, 1)
	for _, addr := range []string{"127.0.0.1:1", testPeer(2).Addr} {
		hijack.Addr = addr
		if _, _, err := l.Announce(hijack, ""); !errors.Is(err, errNotOwner) {
			t.Fatalf("announce over another peer's id from %s: %v", addr, err)
		}
	}
	// The peer that left may come back.
	secrets.Delete(secretKey{l, "peer-1"})
	mustAnnounce(t, l, testPeer(1, 1))
	if n := holderCount(t, l, 1); n != 2 {
		t.Fatalf("after return: %d holders", n)
	}
}

func TestLookupByName(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	mustAnnounce(t, l, testPeer(1, 1))
	info, peers, _, err := l.Lookup(chunkstore.ID{}, "file-1", true, 0, nil)
	if err != nil || info.ID != fileID(1) || len(peers) != 1 {
		t.Fatalf("by name: %v %v %v", info, peers, err)
	}
	if _, _, _, err := l.Lookup(chunkstore.ID{}, "nope", true, 0, nil); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("unknown name: %v", err)
	}
	other := testPeer(2)
	other.Files = []FileInfo{{ID: fileID(9), Name: "file-1", Size: 9}}
	mustAnnounce(t, l, other)
	_, _, _, err = l.Lookup(chunkstore.ID{}, "file-1", true, 0, nil)
	if !errors.Is(err, errAmbiguous) {
		t.Fatalf("two files under one name: %v, want errAmbiguous", err)
	}
	for _, want := range []string{fileID(1).String(), fileID(9).String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ambiguity message %q does not name %s", err, want)
		}
	}
}

func TestBadAnnouncesRejected(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{MaxPeers: 3, MaxFilesPerPeer: 5})
	cases := []struct {
		name string
		p    Peer
		want error
	}{
		{"no id", Peer{Addr: "127.0.0.1:1"}, errInvalid},
		{"long id", Peer{ID: string(make([]byte, 65)), Addr: "127.0.0.1:1"}, errInvalid},
		{"empty address", Peer{ID: "x"}, errInvalid},
		{"no port", Peer{ID: "x", Addr: "127.0.0.1"}, errInvalid},
		{"port zero", Peer{ID: "x", Addr: "127.0.0.1:0"}, errInvalid},
		{"port too big", Peer{ID: "x", Addr: "127.0.0.1:70000"}, errInvalid},
		{"no host", Peer{ID: "x", Addr: ":80"}, errInvalid},
		{"too many files", testPeer(1, 1, 2, 3, 4, 5, 6), errTooLarge},
	}
	for _, c := range cases {
		if _, _, err := l.Announce(c.p, ""); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	for i := range 3 {
		mustAnnounce(t, l, testPeer(i, 1))
	}
	if _, _, err := l.Announce(testPeer(3, 1), ""); !errors.Is(err, errFull) {
		t.Errorf("4th peer in a 3-peer registry: %v, want errFull", err)
	}
	mustAnnounce(t, l, testPeer(2, 1, 2)) // refreshing an existing peer still works
}

func TestMergeKeepsNewestAndTombstones(t *testing.T) {
	a, clk := newTestLeases(LeaseConfig{})
	b := NewLeases(LeaseConfig{Lease: 30 * time.Second, Now: clk.Now})
	mustAnnounce(t, a, testPeer(1, 1))
	b.Merge(a.Snapshot(100))
	if holderCount(t, b, 1) != 1 {
		t.Fatal("merge did not carry the peer")
	}
	if err := a.Leave("peer-1", secretOf(a, "peer-1")); err != nil {
		t.Fatal(err)
	}
	a.Merge(b.Snapshot(100)) // b's older copy must not bring it back
	if holderCount(t, a, 1) != 0 {
		t.Fatal("an older copy revived a peer that left")
	}
	b.Merge(a.Snapshot(100)) // the tombstone travels
	if holderCount(t, b, 1) != 0 {
		t.Fatal("leave did not propagate")
	}
	// Learned entries expire with the original lease, not a fresh one.
	mustAnnounce(t, a, testPeer(2, 2))
	clk.Add(20 * time.Second)
	b.Merge(a.Snapshot(100))
	clk.Add(11 * time.Second)
	if holderCount(t, b, 2) != 0 {
		t.Fatal("a learned entry outlived the lease it was granted")
	}
}

// The table's memory is bounded in bytes, not only in counts: announces of
// long names stop at MaxBytes and start again once leases end.
func TestLeasesBoundedInBytes(t *testing.T) {
	l, clock := newTestLeases(LeaseConfig{MaxBytes: 1 << 20})
	name := strings.Repeat("n", 4000)
	announced := 0
	var err error
	for i := range 100 {
		p := Peer{ID: fmt.Sprintf("p%d", i), Addr: fmt.Sprintf("10.0.0.%d:7000", i+1)}
		for j := range 20 {
			p.Files = append(p.Files, FileInfo{ID: chunkstore.ID{byte(i), byte(j)}, Name: name + fmt.Sprint(j), Size: 1})
		}
		if _, _, err = l.Announce(p, ""); err != nil {
			break
		}
		announced++
	}
	if !errors.Is(err, errFull) || announced == 0 || announced >= 100 {
		t.Fatalf("%d announces of 80 KB taken, then %v; want a stop near 1 MiB", announced, err)
	}
	l.mu.Lock()
	bytes := l.bytes
	l.mu.Unlock()
	if bytes > 1<<20 {
		t.Fatalf("table holds %d bytes, over its 1 MiB", bytes)
	}
	clock.Add(l.Lease() + time.Second)
	if _, _, err := l.Announce(testPeer(1000, 1), ""); err != nil {
		t.Fatalf("after the leases ended: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.bytes != entryBytes(LeasedPeer{Peer: testPeer(1000, 1)}) {
		t.Errorf("bytes %d after expiry, want only the new entry's", l.bytes)
	}
}

// A super-seeder announces its files as partial (clients follow its
// WatchHave) but holds all of them: it counts as a full holder.
func TestSuperSeederCountsAsFullHolder(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	seeder := testPeer(1, 5)
	seeder.Files[0].Partial, seeder.Files[0].HidesChunks = true, true
	downloader := testPeer(2, 5)
	downloader.Files[0].Partial = true
	mustAnnounce(t, l, seeder)
	mustAnnounce(t, l, downloader)
	files := l.List()
	if len(files) != 1 || files[0].Holders != 1 || files[0].PartialHolders != 1 {
		t.Fatalf("listed %+v; want 1 full holder (the super-seeder) and 1 partial", files)
	}
}

// Snapshot returns up to max live entries and tombstones, a random sample
// when there are more: what another registry would send.
func (l *Leases) Snapshot(max int) []LeasedPeer {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	out := make([]LeasedPeer, 0, min(max, len(l.peers)))
	seen := 0
	for _, e := range l.peers { // reservoir sample
		seen++
		if len(out) < max {
			out = append(out, e.LeasedPeer)
		} else if j := l.rnd.IntN(seen); j < max {
			out[j] = e.LeasedPeer
		}
	}
	return out
}
