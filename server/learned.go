package server

// Entries registries exchange: a sample of the table out, learned entries
// in, under the invariants in doc.go.

// Snapshot returns up to max live entries and tombstones, a random sample
// when there are more, for an exchange with another registry.
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

// Merge takes entries learned from another registry. An entry replaces
// ours only if its lease ends later (the newest announce or leave wins),
// and never one announced here: only its owner, with its secret, may
// refresh, re-point or remove that. Invalid entries are skipped; the count
// merged is returned.
func (l *Leases) Merge(in []LeasedPeer) int {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	n := 0
	for _, e := range in {
		if !e.Expires.After(now) || e.Expires.After(now.Add(l.cfg.Lease)) {
			continue // expired, or longer than any lease we grant
		}
		if err := l.ValidatePeer(e.Peer); err != nil {
			continue
		}
		if cur, ok := l.peers[e.ID]; ok && (cur.secret != "" || !newer(e, cur.LeasedPeer)) {
			continue
		}
		if l.putLocked(e) == nil {
			n++
		}
	}
	return n
}

// newer reports whether e supersedes cur: its lease ends later, or it is
// the tombstone of the same lease.
func newer(e, cur LeasedPeer) bool {
	if e.Left && !cur.Left {
		return !e.Expires.Before(cur.Expires)
	}
	return e.Expires.After(cur.Expires)
}
