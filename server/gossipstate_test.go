package server

import (
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
