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
	Partial bool // the holder has only some chunks, or hides some (HidesChunks)
	// HidesChunks marks a full holder that reveals chunks a few at a time
	// (super-seeding): Partial for clients, a full holder in counts.
	HidesChunks bool
	// Tree marks a folder: ID holds its tree id's bytes, Name its path
	// with a trailing '/', Size the total of its files, Files their count.
	Tree  bool
	Files int
}

// IDString is the text form of the entry's id: a file's content id or a
// folder's tree id.
func (f FileInfo) IDString() string {
	if f.Tree {
		return chunkstore.TreeID(f.ID).String()
	}
	return f.ID.String()
}

// Peer is one peer's registration.
type Peer struct {
	ID    string     // chosen by the peer, 1 to 64 bytes
	Addr  string     // host:port of its gRPC server
	Files []FileInfo // what it holds
}

// LeasedPeer is a registration with its expiry, as registries gossip it.
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
	// MaxBytes caps the table's memory, in bytes, as estimated from its
	// entries (names, addresses, per-file overhead); an announce past it
	// is ResourceExhausted. Default 128 MiB.
	MaxBytes int
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
	return LeaseConfig{Lease: 30 * time.Second, MaxPeers: 100_000, MaxFilesPerPeer: 10_000, MaxBytes: 128 << 20, MaxLookup: 50, Now: time.Now}
}

// holders is the set of peers holding one file, as a slice for random
// picks and, past smallHolders, a map from peer id to slice position for
// O(1) removal. Most files have one holder or a few, and a map for each
// was a sixth of a large table's memory.
type holders struct {
	info FileInfo
	ids  []string
	pos  map[string]int // nil while ids holds at most smallHolders
}

const smallHolders = 8

func (h *holders) index(id string) int {
	if h.pos == nil {
		return slices.Index(h.ids, id)
	}
	if i, ok := h.pos[id]; ok {
		return i
	}
	return -1
}

func (h *holders) add(id string) {
	if h.index(id) >= 0 {
		return
	}
	h.ids = append(h.ids, id)
	switch {
	case h.pos != nil:
		h.pos[id] = len(h.ids) - 1
	case len(h.ids) > smallHolders:
		h.pos = make(map[string]int, len(h.ids))
		for i, id := range h.ids {
			h.pos[id] = i
		}
	}
}

func (h *holders) remove(id string) {
	i := h.index(id)
	if i < 0 {
		return
	}
	last := len(h.ids) - 1
	h.ids[i] = h.ids[last]
	if h.pos != nil {
		h.pos[h.ids[i]] = i
		delete(h.pos, id)
	}
	h.ids = h.ids[:last]
}

type leaseEntry struct {
	LeasedPeer
	heapIdx int
	secret  string // proves ownership; empty for entries learned by gossip
	bytes   int    // what the entry costs the table, by entryBytes
	digest  uint64 // of the address and files, by digestOf
	// gossiped is the expiry the other registries were last told of, for
	// an entry announced here.
	gossiped time.Time
}

// entryBytes estimates the memory an entry costs the table, indexes
// included: its strings, and a fixed overhead per entry and per file.
func entryBytes(e LeasedPeer) int {
	n := 256 + len(e.ID) + len(e.Addr)
	for _, f := range e.Files {
		n += 160 + 2*len(f.Name) // the entry's copy and the name index's
	}
	return n
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
	bytes    int                        // sum of the entries' bytes, at most cfg.MaxBytes
	rnd      *rand.Rand                 // lookup sampling
	onExpire func(n int)                // called with mu held, for metrics
	gossip   func(Change)               // told of changes made here, without mu held
	version  uint64                     // counts changes to the file index
	listed   []ListedFile               // List's answer at listedAt, read-only
	listedAt uint64                     // the version listed was made at
}

// Change is a change to the table made at this registry, for gossip: an
// announce that added or altered an entry or ended its tombstone (Full),
// a leave (Full, Left), or an announce that only extended the lease.
type Change struct {
	LeasedPeer
	Full   bool
	Digest uint64
}

// OnChange sets the function told of every change announced or left here
// (Gossip's).
func (l *Leases) OnChange(fn func(Change)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gossip = fn
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
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = def.MaxBytes
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
		return fmt.Errorf("%w: address %s is not host:port", errInvalid, chunkstore.Clip(addr))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%w: address %s has no valid port", errInvalid, chunkstore.Clip(addr))
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
	// putLocked updates cur in place: what it was is read first.
	wasLive := ok && !cur.Left
	var was uint64
	if ok {
		was = cur.digest
	}
	if err == nil {
		err = l.putLocked(LeasedPeer{Peer: p, Expires: now.Add(l.cfg.Lease)})
	}
	var change *Change
	if err == nil {
		e := l.peers[p.ID]
		if !wasLive || e.secret == "" {
			e.secret = newSecret()
		}
		secret = e.secret
		change = l.changeLocked(e, wasLive && was == e.digest, now)
	}
	gossip := l.gossip
	l.mu.Unlock()
	if err != nil {
		return 0, "", err
	}
	if change != nil && gossip != nil {
		gossip(*change)
	}
	if l.cfg.OnAnnounce != nil {
		l.cfg.OnAnnounce(p)
	}
	return l.cfg.Lease, secret, nil
}

// changeLocked is what the other registries must hear of e, announced
// here: all of it if it is new or changed, else its lease when their
// copies have less than half a lease left (peers re-announce every third
// of one, so every second refresh travels), else nothing.
func (l *Leases) changeLocked(e *leaseEntry, same bool, now time.Time) *Change {
	if same && e.gossiped.Sub(now) >= l.cfg.Lease/2 {
		return nil
	}
	e.gossiped = e.Expires
	return &Change{LeasedPeer: e.LeasedPeer, Full: !same, Digest: e.digest}
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
	size := entryBytes(e)
	if e.Left {
		size = entryBytes(LeasedPeer{Peer: Peer{ID: e.ID, Addr: e.Addr}})
	}
	old := 0
	if ok {
		old = cur.bytes
	}
	if l.bytes-old+size > l.cfg.MaxBytes {
		return fmt.Errorf("%w: the table holds %d MiB, at most %d", errFull, l.bytes>>20, l.cfg.MaxBytes>>20)
	}
	l.bytes += size - old
	digest := digestOf(e)
	if ok && !cur.Left && !e.Left && cur.digest == digest {
		// A refresh: the same address and files, a later lease. The index
		// stays as it is.
		cur.LeasedPeer = e
		cur.bytes = size
		heap.Fix(&l.expiry, cur.heapIdx)
		return nil
	}
	l.version++
	if ok {
		l.unindexLocked(cur)
		cur.LeasedPeer = e
		cur.bytes = size
		cur.digest = digest
		heap.Fix(&l.expiry, cur.heapIdx)
	} else {
		cur = &leaseEntry{LeasedPeer: e, bytes: size, digest: digest}
		l.peers[e.ID] = cur
		heap.Push(&l.expiry, cur)
	}
	if !e.Left {
		for _, f := range e.Files {
			h := l.files[f.ID]
			if h == nil {
				h = &holders{info: FileInfo{ID: f.ID, Name: f.Name, Size: f.Size, Tree: f.Tree, Files: f.Files}}
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
	l.version++
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
// tombstone stays until the old lease would have ended, so that gossip
// from other registries does not bring the peer back.
func (l *Leases) Leave(id, secret string) error {
	now := l.cfg.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	cur, ok := l.peers[id]
	if !ok || cur.Left {
		return fmt.Errorf("peer %s: %w", chunkstore.Clip(id), chunkstore.ErrNotFound)
	}
	if cur.secret == "" || cur.secret != secret {
		return fmt.Errorf("%w: only the holder of %s's registration may remove it", errNotOwner, id)
	}
	tomb := LeasedPeer{Peer: Peer{ID: id, Addr: cur.Addr}, Expires: now.Add(l.cfg.Lease), Left: true}
	if err := l.putLocked(tomb); err != nil {
		return err
	}
	if l.gossip != nil {
		// Told with mu held, unlike an announce: a leave is rare, and the
		// gossip queue never calls back into the table.
		l.gossip(Change{LeasedPeer: tomb, Full: true})
	}
	return nil
}

// sweepLocked drops entries whose lease ended.
func (l *Leases) sweepLocked(now time.Time) {
	n := 0
	for len(l.expiry) > 0 && !l.expiry[0].Expires.After(now) {
		e := heap.Pop(&l.expiry).(*leaseEntry)
		l.unindexLocked(e)
		delete(l.peers, e.ID)
		l.bytes -= e.bytes
		if !e.Left {
			n++
		}
	}
	if n > 0 && l.onExpire != nil {
		l.onExpire(n)
	}
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
