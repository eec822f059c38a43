package server

import (
	"container/heap"
	"encoding/binary"
	"hash/fnv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
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

// stateEntry is one entry of a push-pull's table as it travels: a
// GossipEntry whose peer stays encoded until it is known to be news.
type stateEntry struct {
	id      string
	expires uint64 // Unix ms
	left    bool
	peer    []byte // the PeerInfo's encoding
}

// appendEntry appends e as a GossipState's entries field.
func appendEntry(b []byte, e stateEntry) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entryWireSize(e)))
	b = protowire.AppendTag(b, 1, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, e.expires)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, e.peer)
	if e.left {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// entryWireSize is the size of e's GossipEntry encoding.
func entryWireSize(e stateEntry) int {
	n := 1 + 8 + 1 + protowire.SizeBytes(len(e.peer))
	if e.left {
		n += 2
	}
	return n
}

// statePeers is every entry, live or tombstone, as a push-pull sends it:
// copies that share the entries' strings and file lists, which a change
// replaces rather than alters.
func (l *Leases) statePeers() []LeasedPeer {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	out := make([]LeasedPeer, 0, len(l.peers))
	for _, e := range l.peers {
		out = append(out, e.LeasedPeer)
	}
	return out
}

// scanState reads a GossipState's entries, leaving each peer encoded but
// for its id: a pushed table is mostly what the registry holds already,
// and decoding all of it was most of a push-pull's garbage.
func scanState(b []byte) ([]stateEntry, error) {
	var out []stateEntry
	err := eachMessage(b, 1, func(v []byte) error {
		e, err := scanEntry(v)
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scannedRefresh is a GossipRefresh.
type scannedRefresh struct {
	id      string
	digest  uint64
	expires uint64 // Unix ms
}

// scanBatch reads a GossipBatch as scanState reads a table: its entries
// (field 1, as a table's) with their peers left encoded, and its refreshes.
func scanBatch(b []byte) ([]stateEntry, []scannedRefresh, error) {
	entries, err := scanState(b) // skips the refreshes
	if err != nil {
		return nil, nil, err
	}
	var refreshes []scannedRefresh
	err = eachMessage(b, 2, func(v []byte) error {
		r, err := scanRefresh(v)
		refreshes = append(refreshes, r)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return entries, refreshes, nil
}

// eachMessage calls fn with each length-delimited field numbered field of
// the message b, in order, skipping the other fields, until fn fails.
func eachMessage(b []byte, field protowire.Number, fn func([]byte) error) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		if num != field || typ != protowire.BytesType {
			return 0, nil
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return n, nil
		}
		return n, fn(v)
	})
}

// eachField walks the fields of the message b: fn reads the value of field
// num, of wire type typ, at the start of b and returns its length (a
// protowire error code if negative), or 0 to have it skipped. The walk
// stops at a malformed field or at fn's error.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, b []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		n, err := fn(num, typ, b)
		if err != nil {
			return err
		}
		if n == 0 {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// scanRefresh reads one GossipRefresh.
func scanRefresh(b []byte) (scannedRefresh, error) {
	var r scannedRefresh
	err := eachField(b, func(num protowire.Number, typ protowire.Type, b []byte) (n int, _ error) {
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			r.expires, n = protowire.ConsumeFixed64(b)
		case num == 2 && typ == protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			r.id = string(v)
		case num == 3 && typ == protowire.Fixed64Type:
			r.digest, n = protowire.ConsumeFixed64(b)
		}
		return n, nil
	})
	return r, err
}

// scanEntry reads one GossipEntry and its peer's id.
func scanEntry(b []byte) (stateEntry, error) {
	var e stateEntry
	err := eachField(b, func(num protowire.Number, typ protowire.Type, b []byte) (n int, _ error) {
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			e.expires, n = protowire.ConsumeFixed64(b)
		case num == 2 && typ == protowire.BytesType:
			e.peer, n = protowire.ConsumeBytes(b)
		case num == 3 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			e.left = v != 0
		}
		return n, nil
	})
	if err != nil {
		return e, err
	}
	// PeerInfo's peer_id, field 1; the last one, as protobuf decodes it.
	err = eachMessage(e.peer, 1, func(v []byte) error {
		e.id = string(v)
		return nil
	})
	return e, err
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
