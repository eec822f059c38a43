package client

import "testing"

// An idle worker may copy anyone's chunks; a busy one only those of a peer
// sending at under a third of its own rate, and nothing before its own
// rate is known.
func TestDupFromNamesOnlyMuchSlowerPeers(t *testing.T) {
	d := &Download{}
	rates := []int64{0, 9 << 20, 2 << 20, 4 << 20}
	for i, r := range rates {
		p := &peerState{id: i}
		p.rate.Store(r)
		d.peers = append(d.peers, p)
	}
	fast, slow, mid := d.peers[1], d.peers[2], d.peers[3]
	if f := d.dupFrom(slow, true); f == nil || !f(1) || !f(3) {
		t.Fatal("an idle worker may not copy everyone's chunks")
	}
	f := d.dupFrom(fast, false)
	if f == nil || !f(2) || f(3) || f(0) {
		t.Fatal("a busy fast worker: want copies of the peer at under a third of its rate only")
	}
	if d.dupFrom(mid, false) != nil || d.dupFrom(slow, false) != nil || d.dupFrom(d.peers[0], false) != nil {
		t.Fatal("a busy worker with no peer that much slower, or with no rate yet, got copies")
	}
}
