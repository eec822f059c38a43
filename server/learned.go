package server

import (
	"container/heap"
	"encoding/binary"
	"hash/fnv"
	"time"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Entries registries gossip: the table out, learned entries in, under the
// invariants in doc.go.

// Merge takes entries learned from another registry. An entry replaces
// ours only if its lease ends later (the newest announce or leave wins),
// and never one announced here: only its owner, with its secret, may
// refresh, re-point or remove that. Invalid entries are skipped; the count
// merged is returned.
func (l *Leases) Merge(in []LeasedPeer) int {
	n := 0
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	for _, e := range in {
		if !e.Expires.After(now) || e.Expires.After(now.Add(l.cfg.Lease)) {
			continue // expired, or longer than any lease we grant
		}
		cur, ok := l.peers[e.ID]
		if ok && (cur.secret != "" || !newer(e, cur.LeasedPeer)) {
			continue // the common case in a push-pull: nothing new
		}
		if err := l.ValidatePeer(e.Peer); err != nil {
			continue
		}
		if l.putLocked(e) == nil { // a later lease of the same entry is not reindexed
			n++
		}
	}
	return n
}

// wireEntries is every entry, live or tombstone, as a push-pull sends it;
// each entry's peer is converted once per change, not once per push-pull.
func (l *Leases) wireEntries() []*shoalv1.GossipEntry {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	out := make([]*shoalv1.GossipEntry, 0, len(l.peers))
	for _, e := range l.peers {
		if e.wire == nil {
			e.wire = peerToWire(e.Peer)
		}
		out = append(out, &shoalv1.GossipEntry{ExpiresUnixMs: unixMs(e.Expires), Peer: e.wire, Left: e.Left})
	}
	return out
}

// Newer reports, for each (id, expires, left), whether an entry like it
// could change the table: the cheap first pass over a push-pull's table,
// before its entries are parsed.
func (l *Leases) Newer(ids []string, expires []time.Time, left []bool) []bool {
	out := make([]bool, len(ids))
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, id := range ids {
		cur, ok := l.peers[id]
		out[i] = !ok || cur.secret == "" && newer(LeasedPeer{Peer: Peer{ID: id}, Expires: expires[i], Left: left[i]}, cur.LeasedPeer)
	}
	return out
}

// Extend applies a refresh learned from another registry: the entry id,
// if learned (not announced here), live, and with the digest given, gets
// the later expiry, never longer than a lease from now. It reports whether
// the entry changed.
func (l *Leases) Extend(id string, digest uint64, expires time.Time) bool {
	now := l.cfg.Now()
	if !expires.After(now) || expires.After(now.Add(l.cfg.Lease)) {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	cur, ok := l.peers[id]
	if !ok || cur.Left || cur.secret != "" || cur.digest != digest || !expires.After(cur.Expires) {
		return false
	}
	cur.Expires = expires
	heap.Fix(&l.expiry, cur.heapIdx)
	return true
}

// digestOf identifies an entry's address and files (FNV-1a, 64 bits).
func digestOf(e LeasedPeer) uint64 {
	h := fnv.New64a()
	h.Write([]byte(e.Addr))
	var b [8]byte
	for _, f := range e.Files {
		h.Write(f.ID[:])
		binary.LittleEndian.PutUint64(b[:], uint64(f.Size))
		h.Write(b[:])
		flags := byte(0)
		for i, on := range []bool{f.Partial, f.HidesChunks, f.Tree} {
			if on {
				flags |= 1 << i
			}
		}
		binary.LittleEndian.PutUint32(b[:], uint32(f.Files))
		h.Write(append(b[:4], flags))
		h.Write([]byte(f.Name))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// newer reports whether e supersedes cur: its lease ends later, or it is
// the tombstone of the same lease.
func newer(e, cur LeasedPeer) bool {
	if e.Left && !cur.Left {
		return !e.Expires.Before(cur.Expires)
	}
	return e.Expires.After(cur.Expires)
}
