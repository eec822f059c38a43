package server

import (
	"container/heap"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// FileInfo identifies a file a peer holds.
type FileInfo struct {
	ID      chunkstore.ID
	Name    string
	Size    int64
	Partial bool // the holder has only some chunks
}

// Peer is one peer's registration.
type Peer struct {
	ID    string     // chosen by the peer, 1 to 64 bytes
	Addr  string     // host:port of its gRPC server
	Files []FileInfo // what it holds
}

// LeasedPeer is a registration with its expiry, as registries exchange it.
type LeasedPeer struct {
	Peer
	Expires time.Time
	Left    bool // a tombstone: the peer left before Expires
}

// LeaseConfig holds the lease table's limits.
type LeaseConfig struct {
	// Lease is how long a registration lives without a re-announce.
	// Default 30 s.
	Lease time.Duration
	// MaxPeers caps registrations (live and tombstones); more is
	// ResourceExhausted. It bounds the table's memory. Default 100,000.
	MaxPeers int
	// MaxFilesPerPeer caps one announce's file list. Default 10,000.
	MaxFilesPerPeer int
	// MaxLookup caps the peers one Lookup returns; also its default.
	// Default 50.
	MaxLookup int
	// Now is the clock; tests inject a fake one. Default time.Now.
	Now func() time.Time
	// OnAnnounce, if set, is called after each accepted announce, without
	// the table's lock held.
	OnAnnounce func(Peer)
}

// DefaultLeaseConfig returns the limits used by `shoal registry`.
func DefaultLeaseConfig() LeaseConfig {
	return LeaseConfig{Lease: 30 * time.Second, MaxPeers: 100_000, MaxFilesPerPeer: 10_000, MaxLookup: 50, Now: time.Now}
}

// holders is the set of peers holding one file, as a slice for random
// picks and a map from peer id to slice position for O(1) removal.
type holders struct {
	info FileInfo
	ids  []string
	pos  map[string]int
}

func (h *holders) add(id string) {
	if _, ok := h.pos[id]; ok {
		return
	}
	h.pos[id] = len(h.ids)
	h.ids = append(h.ids, id)
}

func (h *holders) remove(id string) {
	i, ok := h.pos[id]
	if !ok {
		return
	}
	last := len(h.ids) - 1
	h.ids[i] = h.ids[last]
	h.pos[h.ids[i]] = i
	h.ids = h.ids[:last]
	delete(h.pos, id)
}

type leaseEntry struct {
	LeasedPeer
	heapIdx int
	secret  string // proves ownership; empty for entries learned by exchange
}

// Leases is the registry's table of peers and files. It is safe for
// concurrent use; all fields below mu are guarded by it.
type Leases struct {
	cfg LeaseConfig

	mu       sync.Mutex
	peers    map[string]*leaseEntry     // by peer id
	files    map[chunkstore.ID]*holders // by content id
	names    map[string][]chunkstore.ID // by file name
	expiry   expiryHeap                 // every entry, soonest first
	rnd      *rand.Rand                 // lookup sampling
	onExpire func(n int)                // called with mu held, for metrics
}

// NewLeases returns an empty table.
func NewLeases(cfg LeaseConfig) *Leases {
	def := DefaultLeaseConfig()
	if cfg.Lease <= 0 {
		cfg.Lease = def.Lease
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = def.MaxPeers
	}
	if cfg.MaxFilesPerPeer <= 0 {
		cfg.MaxFilesPerPeer = def.MaxFilesPerPeer
	}
	if cfg.MaxLookup <= 0 {
		cfg.MaxLookup = def.MaxLookup
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Leases{
		cfg:   cfg,
		peers: map[string]*leaseEntry{},
		files: map[chunkstore.ID]*holders{},
		names: map[string][]chunkstore.ID{},
		rnd:   rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// Lease is the lease length granted on announce.
func (l *Leases) Lease() time.Duration { return l.cfg.Lease }

// OnExpire sets a callback told how many leases expired in each sweep.
func (l *Leases) OnExpire(fn func(n int)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onExpire = fn
}

// ValidatePeer checks a registration before it enters the table.
func (l *Leases) ValidatePeer(p Peer) error {
	if p.ID == "" || len(p.ID) > 64 {
		return fmt.Errorf("%w: peer id must be 1 to 64 bytes", errInvalid)
	}
	if err := validateAddr(p.Addr); err != nil {
		return err
	}
	if len(p.Files) > l.cfg.MaxFilesPerPeer {
		return fmt.Errorf("%w: %d files in one announce, at most %d", errTooLarge, len(p.Files), l.cfg.MaxFilesPerPeer)
	}
	for _, f := range p.Files {
		if len(f.Name) > 4096 || f.Size < 0 {
			return fmt.Errorf("%w: file %s: name over 4096 bytes or negative size", errInvalid, f.ID)
		}
	}
	return nil
}

// validateAddr accepts host:port with a non-empty host and a port in 1..65535.
func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || len(addr) > 300 {
		return fmt.Errorf("%w: address %q is not host:port", errInvalid, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%w: address %q has no valid port", errInvalid, addr)
	}
	return nil
}

// Announce registers p or refreshes it, replacing its file list, and
// returns the lease and the registration's secret. Refreshing a live
// registration takes the secret the first announce returned (or, for one
// learned from another registry, the same address), so that no one can
// take over another peer's registration.
func (l *Leases) Announce(p Peer, secret string) (time.Duration, string, error) {
	if err := l.ValidatePeer(p); err != nil {
		return 0, "", err
	}
	now := l.cfg.Now()
	l.mu.Lock()
	l.sweepLocked(now)
	cur, ok := l.peers[p.ID]
	var err error
	switch {
	case !ok || cur.Left:
	case cur.secret != "" && cur.secret != secret:
		err = fmt.Errorf("%w: %s is registered by another holder (wrong secret)", errNotOwner, p.ID)
	case cur.secret == "" && cur.Addr != p.Addr:
		err = fmt.Errorf("%w: %s is registered at %s", errNotOwner, p.ID, cur.Addr)
	}
	if err == nil {
		err = l.putLocked(LeasedPeer{Peer: p, Expires: now.Add(l.cfg.Lease)})
	}
	if err == nil {
		e := l.peers[p.ID]
		if !ok || cur.Left || e.secret == "" {
			e.secret = newSecret()
		}
		secret = e.secret
	}
	l.mu.Unlock()
	if err != nil {
		return 0, "", err
	}
	if l.cfg.OnAnnounce != nil {
		l.cfg.OnAnnounce(p)
	}
	return l.cfg.Lease, secret, nil
}

// newSecret returns 128 random bits in hex.
func newSecret() string {
	var b [16]byte
	crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// putLocked stores e, replacing the peer's earlier entry.
func (l *Leases) putLocked(e LeasedPeer) error {
	cur, ok := l.peers[e.ID]
	if !ok && len(l.peers) >= l.cfg.MaxPeers {
		return fmt.Errorf("%w: %d peers registered", errFull, len(l.peers))
	}
	if ok {
		l.unindexLocked(cur)
		cur.LeasedPeer = e
		heap.Fix(&l.expiry, cur.heapIdx)
	} else {
		cur = &leaseEntry{LeasedPeer: e}
		l.peers[e.ID] = cur
		heap.Push(&l.expiry, cur)
	}
	if !e.Left {
		for _, f := range e.Files {
			h := l.files[f.ID]
			if h == nil {
				h = &holders{info: FileInfo{ID: f.ID, Name: f.Name, Size: f.Size}, pos: map[string]int{}}
				l.files[f.ID] = h
				l.names[f.Name] = append(l.names[f.Name], f.ID)
			}
			h.add(e.ID)
		}
	}
	return nil
}

// unindexLocked removes e from the file index.
func (l *Leases) unindexLocked(e *leaseEntry) {
	if e.Left {
		return
	}
	for _, f := range e.Files {
		h := l.files[f.ID]
		if h == nil {
			continue
		}
		h.remove(e.ID)
		if len(h.ids) == 0 {
			delete(l.files, f.ID)
			ids := slices.DeleteFunc(l.names[h.info.Name], func(id chunkstore.ID) bool { return id == f.ID })
			if len(ids) == 0 {
				delete(l.names, h.info.Name)
			} else {
				l.names[h.info.Name] = ids
			}
		}
	}
}

// Leave removes a peer at once; it takes the registration's secret. A
// tombstone stays until the old lease would have ended, so that exchanges
// with other registries do not bring the peer back.
func (l *Leases) Leave(id, secret string) error {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	cur, ok := l.peers[id]
	if !ok || cur.Left {
		return fmt.Errorf("peer %q: %w", id, chunkstore.ErrNotFound)
	}
	if cur.secret == "" || cur.secret != secret {
		return fmt.Errorf("%w: only the holder of %s's registration may remove it", errNotOwner, id)
	}
	return l.putLocked(LeasedPeer{Peer: Peer{ID: id, Addr: cur.Addr}, Expires: now.Add(l.cfg.Lease), Left: true})
}

// sweepLocked drops entries whose lease ended.
func (l *Leases) sweepLocked(now time.Time) {
	n := 0
	for len(l.expiry) > 0 && !l.expiry[0].Expires.After(now) {
		e := heap.Pop(&l.expiry).(*leaseEntry)
		l.unindexLocked(e)
		delete(l.peers, e.ID)
		if !e.Left {
			n++
		}
	}
	if n > 0 && l.onExpire != nil {
		l.onExpire(n)
	}
}

// Lookup finds a file by content id, or by name when byName is set, and
// picks up to limit live holders at random, leaving out those in exclude.
// It also returns how many live holders there are in all.
func (l *Leases) Lookup(id chunkstore.ID, name string, byName bool, limit int, exclude []string) (FileInfo, []Peer, int, error) {
	if limit <= 0 || limit > l.cfg.MaxLookup {
		limit = l.cfg.MaxLookup
	}
	if len(exclude) > 10_000 {
		return FileInfo{}, nil, 0, fmt.Errorf("%w: exclude list over 10000 ids", errTooLarge)
	}
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if byName {
		ids := l.names[name]
		switch len(ids) {
		case 0:
			return FileInfo{}, nil, 0, fmt.Errorf("no file named %q: %w", name, chunkstore.ErrNotFound)
		case 1:
			id = ids[0]
		default:
			msg := fmt.Sprintf("%q is %d different files; ask by content id:", name, len(ids))
			for _, id := range ids {
				msg += fmt.Sprintf(" %s (%d bytes)", id, l.files[id].info.Size)
			}
			return FileInfo{}, nil, 0, fmt.Errorf("%w: %s", errAmbiguous, msg)
		}
	}
	h := l.files[id]
	if h == nil {
		return FileInfo{}, nil, 0, fmt.Errorf("file %s: %w", id, chunkstore.ErrNotFound)
	}
	skip := make(map[string]bool, len(exclude)+limit)
	for _, x := range exclude {
		skip[x] = true
	}
	var out []Peer
	pick := func(pid string) {
		if !skip[pid] {
			skip[pid] = true
			out = append(out, l.peers[pid].Peer)
		}
	}
	// Random picks while they are cheap; then a scan from a random start
	// so that a long exclude list still finds every remaining holder.
	n := len(h.ids)
	for tries := 0; tries < 4*limit && len(out) < limit && n > 0; tries++ {
		pick(h.ids[l.rnd.IntN(n)])
	}
	if len(out) < limit && n > 0 {
		start := l.rnd.IntN(n)
		for k := 0; k < n && len(out) < limit; k++ {
			pick(h.ids[(start+k)%n])
		}
	}
	info := h.info
	info.Partial = false
	return info, out, n, nil
}

// ListedFile is a file with its holder count.
type ListedFile struct {
	FileInfo
	Holders        int // live peers holding all of it
	PartialHolders int // live peers holding part of it
}

// List returns every file with live holders, sorted by name then id.
func (l *Leases) List() []ListedFile {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	// Which files each peer holds in part, built once: asking each
	// holder's file list per file would cost files x holders x list length.
	partial := map[string]map[chunkstore.ID]bool{}
	for pid, e := range l.peers {
		for _, f := range e.Files {
			if f.Partial {
				if partial[pid] == nil {
					partial[pid] = map[chunkstore.ID]bool{}
				}
				partial[pid][f.ID] = true
			}
		}
	}
	out := make([]ListedFile, 0, len(l.files))
	for id, h := range l.files {
		lf := ListedFile{FileInfo: h.info}
		for _, pid := range h.ids {
			if partial[pid][id] {
				lf.PartialHolders++
			} else {
				lf.Holders++
			}
		}
		out = append(out, lf)
	}
	slices.SortFunc(out, func(a, b ListedFile) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	return out
}

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

// Len returns the number of live registrations.
func (l *Leases) Len() (peers, files int) {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	for _, e := range l.peers {
		if !e.Left {
			peers++
		}
	}
	return peers, len(l.files)
}

// expiryHeap orders entries by expiry, soonest first.
type expiryHeap []*leaseEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].Expires.Before(h[j].Expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*leaseEntry)
	e.heapIdx = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
