package server

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// fillLeases registers peers peers holding files files each, drawn from a
// pool of peers/10 distinct files so that every file has many holders.
func fillLeases(b *testing.B, peers, files int) *Leases {
	l := NewLeases(LeaseConfig{Lease: time.Hour, MaxPeers: peers + 1})
	pool := max(1, peers/10)
	for i := range peers {
		p := Peer{ID: fmt.Sprintf("peer-%d", i), Addr: fmt.Sprintf("10.0.%d.%d:7070", i/250, i%250+1)}
		for j := range files {
			f := (i + j*7919) % pool
			p.Files = append(p.Files, FileInfo{ID: fileID(f), Name: fmt.Sprintf("file-%d", f), Size: 1 << 20})
		}
		if _, _, err := l.Announce(p, ""); err != nil {
			b.Fatal(err)
		}
	}
	return l
}

// BenchmarkLookup looks files up in a registry of 10,000 peers holding 10
// files each. bytes/peer is the heap the table holds per registered peer.
func BenchmarkLookup(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := fillLeases(b, 10_000, 10)
	runtime.GC()
	runtime.ReadMemStats(&after)
	perPeer := float64(after.HeapAlloc-before.HeapAlloc) / 10_000
	exclude := []string{"peer-1", "peer-2", "peer-3"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, peers, _, err := l.Lookup(fileID(i%1000), "", false, 5, exclude); err != nil || len(peers) != 5 {
			b.Fatalf("lookup: %d peers, %v", len(peers), err)
		}
		i++
	}
	b.ReportMetric(perPeer, "bytes/peer")
	runtime.KeepAlive(l)
}
