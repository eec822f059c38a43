package server

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

func sampleState() *shoalv1.GossipState {
	return &shoalv1.GossipState{Entries: []*shoalv1.GossipEntry{
		{ExpiresUnixMs: 1_700_000_000_123, Peer: &shoalv1.PeerInfo{PeerId: "a", Address: "10.0.0.1:7070",
			Files: []*shoalv1.FileInfo{{ContentId: "sh1x", Name: "f", Size: 5}}}},
		{ExpiresUnixMs: 1_700_000_000_456, Peer: &shoalv1.PeerInfo{PeerId: "b", Address: "10.0.0.2:7070"}, Left: true},
	}}
}

// A table encoded from cached peers is a GossipState, and a GossipState
// scans back to its entries with their peers untouched.
func TestStateEncodingRoundTrips(t *testing.T) {
	want := sampleState()
	var b []byte
	for _, w := range want.GetEntries() {
		peer, err := proto.Marshal(w.GetPeer())
		if err != nil {
			t.Fatal(err)
		}
		b = appendEntry(b, stateEntry{id: w.GetPeer().GetPeerId(), expires: w.GetExpiresUnixMs(), left: w.GetLeft(), peer: peer})
	}
	var got shoalv1.GossipState
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("encoded table decodes to %v, want %v", &got, want)
	}

	buf, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := scanState(buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries scanned, want 2", len(entries))
	}
	for i, e := range entries {
		w := want.GetEntries()[i]
		var p shoalv1.PeerInfo
		if err := proto.Unmarshal(e.peer, &p); err != nil {
			t.Fatal(err)
		}
		if e.id != w.GetPeer().GetPeerId() || e.expires != w.GetExpiresUnixMs() || e.left != w.GetLeft() || !proto.Equal(&p, w.GetPeer()) {
			t.Errorf("entry %d scanned as %q %d %v %v, want %v", i, e.id, e.expires, e.left, &p, w)
		}
	}
}

// Whatever a member pushes, the scan neither panics nor disagrees with
// protobuf about an entry both accept.
func FuzzScanState(f *testing.F) {
	b, _ := proto.Marshal(sampleState())
	f.Add(b)
	f.Add([]byte{0x0a, 0x02, 0x09, 0x01})
	f.Fuzz(func(t *testing.T, buf []byte) {
		entries, err := scanState(buf)
		var st shoalv1.GossipState
		if err != nil || proto.Unmarshal(buf, &st) != nil {
			return
		}
		if len(entries) != len(st.GetEntries()) {
			t.Fatalf("scan found %d entries, protobuf %d", len(entries), len(st.GetEntries()))
		}
		for i, e := range entries {
			w := st.GetEntries()[i]
			if e.id != w.GetPeer().GetPeerId() || e.expires != w.GetExpiresUnixMs() || e.left != w.GetLeft() {
				t.Fatalf("entry %d: scan %q %d %v, protobuf %v", i, e.id, e.expires, e.left, w)
			}
		}
	})
}

func sampleBatch() *shoalv1.GossipBatch {
	return &shoalv1.GossipBatch{
		Entries: sampleState().GetEntries(),
		Refreshes: []*shoalv1.GossipRefresh{
			{ExpiresUnixMs: 1_700_000_001_000, PeerId: "c", Digest: 42},
			{ExpiresUnixMs: 1_700_000_002_000, PeerId: "d", Digest: 1 << 63},
		},
	}
}

// A batch scans to the entries and refreshes protobuf decodes, whatever a
// member sends, and an unreadable one is refused whole.
func FuzzScanBatch(f *testing.F) {
	b, _ := proto.Marshal(sampleBatch())
	f.Add(b)
	f.Add([]byte{0x12, 0x02, 0x09, 0x01})
	f.Fuzz(func(t *testing.T, buf []byte) {
		entries, refreshes, err := scanBatch(buf)
		var w shoalv1.GossipBatch
		if err != nil || proto.Unmarshal(buf, &w) != nil {
			return
		}
		if len(entries) != len(w.GetEntries()) || len(refreshes) != len(w.GetRefreshes()) {
			t.Fatalf("scan found %d entries and %d refreshes, protobuf %d and %d", len(entries), len(refreshes), len(w.GetEntries()), len(w.GetRefreshes()))
		}
		for i, e := range entries {
			we := w.GetEntries()[i]
			if e.id != we.GetPeer().GetPeerId() || e.expires != we.GetExpiresUnixMs() || e.left != we.GetLeft() {
				t.Fatalf("entry %d: scan %q %d %v, protobuf %v", i, e.id, e.expires, e.left, we)
			}
		}
		for i, r := range refreshes {
			wr := w.GetRefreshes()[i]
			if r.id != wr.GetPeerId() || r.digest != wr.GetDigest() || r.expires != wr.GetExpiresUnixMs() {
				t.Fatalf("refresh %d: scan %+v, protobuf %v", i, r, wr)
			}
		}
	})
}

// The sample batch scans to what it holds (the fuzz target's seed, checked
// in every run).
func TestBatchScanRoundTrips(t *testing.T) {
	want := sampleBatch()
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	entries, refreshes, err := scanBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || len(refreshes) != 2 {
		t.Fatalf("%d entries and %d refreshes scanned, want 2 and 2", len(entries), len(refreshes))
	}
	if r := refreshes[1]; r.id != "d" || r.digest != 1<<63 || r.expires != 1_700_000_002_000 {
		t.Errorf("second refresh scanned as %+v", r)
	}
	if e := entries[1]; e.id != "b" || !e.left {
		t.Errorf("second entry scanned as %q left=%v", e.id, e.left)
	}
}

// Push-pulls within stateReuse of each other share one encoded table; a
// later one encodes the table as it is then, within MaxState.
func TestStateIsSharedBriefly(t *testing.T) {
	l, _ := newTestLeases(LeaseConfig{})
	mustAnnounce(t, l, testPeer(1, 1))
	g := &Gossip{cfg: GossipConfig{MaxState: 1 << 20}, leases: l}
	count := func(b []byte) int {
		t.Helper()
		var st shoalv1.GossipState
		if err := proto.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		return len(st.GetEntries())
	}
	first := g.state()
	mustAnnounce(t, l, testPeer(2, 2))
	if again := g.state(); &again[0] != &first[0] || count(again) != 1 {
		t.Fatalf("a push-pull right after another encoded its own table (%d entries)", count(again))
	}
	g.stateMu.Lock()
	g.sharedAt = g.sharedAt.Add(-stateReuse)
	g.stateMu.Unlock()
	if later := g.state(); count(later) != 2 {
		t.Fatalf("a later push-pull's table holds %d entries, want 2", count(later))
	}
	for n := 3; n <= 40; n++ {
		mustAnnounce(t, l, testPeer(n, n))
	}
	g.stateMu.Lock()
	g.shared, g.cfg.MaxState = nil, 1000
	g.stateMu.Unlock()
	small := g.state()
	if len(small) > 1000 || count(small) == 0 || count(small) == 40 {
		t.Fatalf("a table within 1000 bytes: %d bytes, %d of 40 entries", len(small), count(small))
	}
}

// A file's holders stay a set through adds and removes, past the size
// where they gain an index and back.
func TestHoldersPastSmallHolders(t *testing.T) {
	h := &holders{}
	want := map[string]bool{}
	rnd := rand.New(rand.NewPCG(1, 2))
	for step := range 2000 {
		id := fmt.Sprint("p", rnd.IntN(3*smallHolders))
		if rnd.IntN(2) == 0 {
			h.add(id)
			want[id] = true
		} else {
			h.remove(id)
			delete(want, id)
		}
		if len(h.ids) != len(want) {
			t.Fatalf("step %d: %d holders, want %d", step, len(h.ids), len(want))
		}
		for i, id := range h.ids {
			if !want[id] || h.index(id) != i {
				t.Fatalf("step %d: holder %q at %d, indexed at %d", step, id, i, h.index(id))
			}
		}
	}
	if h.pos == nil {
		t.Fatal("the holders never gained an index")
	}
}
