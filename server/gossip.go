package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// Federation runs on hashicorp/memberlist, the SWIM implementation under
// Consul and Serf: a joiner learns of every member through any one,
// members that stop answering are found and dropped, and the lease table
// spreads without calls of our own:
//
//   - every change made here (an announce that adds or alters an entry, a
//     leave's tombstone, a refresh) goes in a GossipBatch that each
//     registry sends every member once a second over memberlist's TCP
//     channel. Refreshes are the bulk (one per peer every third of a
//     lease) and travel only every second time per peer, when the others'
//     copies have less than half a lease left.
//   - an announce or leave also goes out at once as gossip (a GossipEntry
//     in memberlist's UDP packets, passed on by each registry that takes
//     it) when gossip is quiet, so most members see it within a few rounds;
//     a burst of announces goes by batch alone, so it cannot crowd out the
//     next one.
//   - a member that joins or comes back is sent, by every member, the
//     changes made there in the last recentWindow (hinted handoff).
//   - memberlist's push-pull carries the whole table, for anti-entropy, on
//     join, and with a member back after longer than the handoff covers.
//     A registry reads at most inboundStreams inbound streams at once.
//   - each ReconnectInterval one member found dead, at random, is asked to
//     join again (memberlist alone gives up on it), so a partition heals
//     by itself.
//
// Leases keep their rules (doc.go): a learned entry carries when its lease
// ends, in wall-clock time (a time left would grow stale in queues, and
// a loaded host delays messages by seconds), and ends learnMargin early
// for clocks that disagree, so it never outlives the lease its peer was
// granted; a tombstone keeps a leave from being undone.

// GossipConfig configures a registry's federation.
type GossipConfig struct {
	// Bind is where gossip listens, UDP and TCP on one port (host:port);
	// port 0 picks a free one. Default: the gRPC listener's host, port 0.
	Bind string
	// Advertise is the gossip address others use (an IP and port); default
	// Bind's, or when Bind's host is unspecified the gRPC advertise
	// address's host if that is an IP.
	Advertise string
	// Key, 16, 24 or 32 bytes, encrypts and authenticates gossip (AES-GCM):
	// only registries holding it join. Required when the node has a token.
	Key []byte
	// Join lists registries (gRPC addresses) to join through.
	Join []string
	// Interval is the time between gossip rounds. Default 200 ms.
	Interval time.Duration
	// PushPullInterval is the time between full-table exchanges with one
	// random member. Default 30 s (memberlist scales it up past 32
	// members).
	PushPullInterval time.Duration
	// ReconnectInterval is how often members found dead, and the Join
	// list when this registry is alone, are tried again. Default 2 s.
	ReconnectInterval time.Duration
	// ReconnectTimeout is how long a dead member is tried. Default 1 h.
	ReconnectTimeout time.Duration
	// BatchInterval is how often the batch of refreshes (and of entries
	// gossip cannot take) goes to every member. Default 1 s, or an eighth
	// of the lease if that is shorter.
	BatchInterval time.Duration
	// ProbeInterval is memberlist's failure-detection period; 0 keeps
	// memberlist's LAN default (1 s).
	ProbeInterval time.Duration
	// MaxState caps a push-pull's table, in bytes (a random sample beyond).
	// Default 16 MiB, under memberlist's 20 MiB.
	MaxState int
}

const (
	gossipEntry = 1
	gossipBatch = 3 // 2 was a refresh on its own, before batches
	// learnMargin is taken off a lease learned from another registry (at
	// most a tenth of the lease): the most registries' clocks are taken to
	// disagree. A learned entry expires early, never late.
	learnMargin = time.Second
	// maxGossipMsg is the largest message sent as gossip (memberlist's UDP
	// packets are 1400 bytes); larger entries go over TCP.
	maxGossipMsg = 1200
	// maxQueued bounds the broadcast queue; past it the oldest messages
	// are dropped and push-pull repairs what they carried.
	maxQueued = 100_000
	// quietQueue is the queue length under which a new entry is gossiped
	// as well as batched; a burst of announces goes by batch alone.
	quietQueue = 100
	// maxBatch caps one batch message, in bytes.
	maxBatch = 4 << 20
	// tcpTimeout bounds memberlist's dials and push-pulls.
	tcpTimeout = 5 * time.Second
	// recentWindow is how long a change is kept for members that come
	// back; a longer absence is repaired by push-pull.
	recentWindow = 2 * time.Minute
)

// Gossip is a registry's membership in its federation.
type Gossip struct {
	cfg    GossipConfig
	name   string
	grpc   string // this registry's gRPC address
	leases *Leases
	dial   []grpc.DialOption
	log    *slog.Logger
	ml     *memberlist.Memberlist
	queue  *memberlist.TransmitLimitedQueue
	// sendMsg delivers one message to a member over TCP: memberlist's
	// SendReliable (tests replace it).
	sendMsg func(*memberlist.Node, []byte) error
	sync    chan string // members to push-pull with, by gossip address

	// stateMu lets one push-pull encode or merge a whole table at a time:
	// a healing partition brings many at once, and each costs a table's
	// size in memory.
	stateMu   sync.Mutex
	shared    []byte      // the last table encoded, for stateReuse; guarded by stateMu
	sharedAt  time.Time   // when shared was encoded; guarded by stateMu
	lastState int         // the last table's size, in bytes; guarded by stateMu
	unshare   *time.Timer // lets shared go after stateReuse; guarded by stateMu

	mu      sync.Mutex
	pending map[string]*entryBroadcast // queued full entries by peer id; guarded by mu
	failed  map[string]failedMember    // members found dead, by name; guarded by mu
	batch   map[string]Change          // for the next batch, by peer id; guarded by mu
	sending map[string]*memberSend     // members with a send under way, by name; guarded by mu
	recent  map[string]recentChange    // changes of the last recentWindow, by peer id; guarded by mu
}

// recentChange is a change batched at some time: a member that comes back
// gets the changes it missed while others saw it dead (hinted handoff), at
// once rather than at the next push-pull.
type recentChange struct {
	Change
	at time.Time
}

type failedMember struct {
	addr, grpc  string
	since, last time.Time // failed; last tried
}

// NewGossip starts the gossip (it listens at once) of the registry serving
// leases on listen and reached at grpcAddr; Run joins the federation and
// keeps it.
func NewGossip(cfg GossipConfig, listen, grpcAddr string, leases *Leases, dial []grpc.DialOption, logger *slog.Logger) (*Gossip, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 200 * time.Millisecond
	}
	if cfg.PushPullInterval <= 0 {
		cfg.PushPullInterval = 30 * time.Second
	}
	if cfg.ReconnectInterval <= 0 {
		cfg.ReconnectInterval = 2 * time.Second
	}
	if cfg.ReconnectTimeout <= 0 {
		cfg.ReconnectTimeout = time.Hour
	}
	if cfg.MaxState <= 0 {
		cfg.MaxState = 16 << 20
	}
	if cfg.BatchInterval <= 0 {
		// Refreshes leave when the others' copies have half a lease left.
		cfg.BatchInterval = min(time.Second, leases.Lease()/8)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if dial == nil {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	switch len(cfg.Key) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("gossip key: %d bytes, want 16, 24 or 32", len(cfg.Key))
	}
	grpcHost, _, err := net.SplitHostPort(grpcAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip: registry address %s: %w", grpcAddr, err)
	}
	if cfg.Bind == "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("gossip: listen address %s: %w", listen, err)
		}
		cfg.Bind = net.JoinHostPort(host, "0")
	}
	bindHost, bindPort, err := splitPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip address %s: %w", cfg.Bind, err)
	}
	var suffix [3]byte
	rand.Read(suffix[:])
	g := &Gossip{
		cfg: cfg, name: grpcAddr + "#" + hex.EncodeToString(suffix[:]), grpc: grpcAddr,
		leases: leases, dial: dial, log: logger, sync: make(chan string, 64),
		pending: map[string]*entryBroadcast{}, failed: map[string]failedMember{}, batch: map[string]Change{}, recent: map[string]recentChange{}, sending: map[string]*memberSend{},
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = g.name
	mc.BindAddr, mc.BindPort = bindHost, bindPort
	if ip := net.ParseIP(bindHost); (ip == nil || ip.IsUnspecified()) && net.ParseIP(grpcHost) != nil {
		mc.AdvertiseAddr = grpcHost // reachable where the gRPC address is
	}
	if cfg.Advertise != "" {
		host, port, err := splitPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise address %s: %w", cfg.Advertise, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	}
	if len(cfg.Key) > 0 {
		mc.SecretKey = cfg.Key
	}
	mc.GossipInterval = cfg.Interval
	mc.GossipNodes = 3
	// Each member that takes an entry sends it this many times log10(N+1):
	// at 6 a member misses every relay of an entry less than once in 10^7
	// (at memberlist's 4, once in 3,000 at 20 members), and gossip carries
	// only announces and leaves, a few a second.
	mc.RetransmitMult = 6
	mc.PushPullInterval = cfg.PushPullInterval
	if cfg.ProbeInterval > 0 {
		mc.ProbeInterval = cfg.ProbeInterval
		mc.ProbeTimeout = min(mc.ProbeTimeout, cfg.ProbeInterval/2)
	}
	mc.TCPTimeout = tcpTimeout
	// memberlist's default: past it messages are dropped rather than
	// delayed (a delayed entry would arrive with its lease overstated);
	// the batches and push-pull repair what is dropped.
	mc.HandoffQueueDepth = 1024
	mc.EnableCompression = false // LAN gossip; the CPU is better spent elsewhere
	mc.Delegate = (*gossipDelegate)(g)
	mc.Events = (*gossipEvents)(g)
	mc.Logger = log.New(memberlistLog{logger}, "", 0)
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return g.ml.NumMembers() }, RetransmitMult: mc.RetransmitMult}
	tr, err := newStreamLimit(mc.BindAddr, mc.BindPort, inboundStreams, mc.Logger)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", cfg.Bind, err)
	}
	mc.Transport = tr
	if mc.BindPort == 0 {
		mc.BindPort = tr.GetAutoBindPort()
		if cfg.Advertise == "" || mc.AdvertisePort == 0 {
			mc.AdvertisePort = mc.BindPort
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("gossip on %s: %w", cfg.Bind, err)
	}
	g.ml = ml
	g.sendMsg = ml.SendReliable
	leases.OnChange(g.changed)
	return g, nil
}

func splitPort(hostport string) (string, int, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	return host, n, nil
}

// Addr is the gossip address others reach this registry at.
func (g *Gossip) Addr() string {
	n := g.ml.LocalNode()
	return n.Address()
}

// Run joins the federation and keeps it until ctx ends, then leaves it.
func (g *Gossip) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait() // last: Shutdown ends the joins under way
	defer func() {
		g.leases.OnChange(nil)
		g.ml.Leave(time.Second)
		g.ml.Shutdown()
	}()
	wg.Go(func() { g.syncer(ctx) })
	wg.Go(func() { g.batcher(ctx) })
	// Until a join through the seeds succeeds, it is tried every round:
	// joining a member that is itself still alone would split the
	// federation in two for good.
	joined := len(g.cfg.Join) == 0 || g.joinSeeds(ctx)
	t := time.NewTicker(g.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if g.queue.NumQueued() > maxQueued {
			g.queue.Prune(maxQueued)
		}
		if !joined || g.ml.NumMembers() <= 1 && len(g.cfg.Join) > 0 {
			joined = g.joinSeeds(ctx) || joined
		}
		g.reconnect(&wg)
	}
}

// joinSeeds joins through the Join registries: it asks each for its
// members' gossip addresses and joins them. It reports whether any join
// succeeded.
func (g *Gossip) joinSeeds(ctx context.Context) bool {
	var addrs []string
	for _, seed := range g.cfg.Join {
		if seed == g.grpc {
			continue
		}
		members, err := fetchMembers(ctx, seed, g.dial)
		if err != nil {
			g.log.Info("gossip: registry to join does not answer", "registry", seed, "err", err)
			continue
		}
		// The seed itself, and two more in case it is leaving: the rest
		// are learned from them (a join is a push-pull of the whole table).
		for _, m := range members[:min(len(members), 3)] {
			addrs = append(addrs, m.GetGossipAddress())
		}
	}
	addrs = slices.Compact(slices.DeleteFunc(addrs, func(a string) bool { return a == "" || a == g.Addr() }))
	if len(addrs) == 0 {
		return false
	}
	n, err := g.ml.Join(addrs)
	if n == 0 {
		g.log.Info("gossip: join failed", "members", addrs, "err", err)
		return false
	}
	g.log.Info("gossip: joined", "through", g.cfg.Join, "members", g.ml.NumMembers())
	return true
}

// fetchMembers asks a registry for its members, itself first.
func fetchMembers(ctx context.Context, addr string, dial []grpc.DialOption) ([]*shoalv1.Member, error) {
	cc, err := grpc.NewClient(addr, append(slices.Clone(dial), registryLinkOptions...)...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := shoalv1.NewRegistryServiceClient(cc).Members(ctx, &shoalv1.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetMembers(), nil
}

// reconnect asks one member found dead, at random, to join again (in its
// own goroutine: an unreachable one takes a TCP timeout). One a round
// from every registry is enough: a join is a push-pull, and the members
// it brings back alive tell the rest.
func (g *Gossip) reconnect(wg *sync.WaitGroup) {
	now := time.Now()
	alive := map[string]bool{}
	for _, m := range g.ml.Members() {
		alive[string(m.Meta)] = true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var names []string
	for name, f := range g.failed {
		switch {
		case now.Sub(f.since) > g.cfg.ReconnectTimeout, alive[f.grpc]:
			delete(g.failed, name) // given up, or back under a new name
		case now.Sub(f.since) > 5*time.Minute && now.Sub(f.last) < 30*time.Second:
			// gone long: tried less often (it may have left for good)
		case f.addr != "":
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return
	}
	name := names[mrand.IntN(len(names))]
	f := g.failed[name]
	addr := f.addr
	f.addr, f.last = "", now // marks the attempt running
	g.failed[name] = f
	wg.Go(func() {
		if _, err := g.ml.Join([]string{addr}); err != nil {
			g.log.Info("gossip: member gone still unreachable", "member", name, "err", err)
		} else {
			// Each side saw the other dead: this push-pull made both refute
			// it (a new incarnation), and only the next carries that, which
			// brings each back alive for the other at once.
			g.ml.Join([]string{addr})
			g.log.Info("gossip: member back", "member", name)
		}
		g.mu.Lock()
		if f, ok := g.failed[name]; ok {
			f.addr = addr
			g.failed[name] = f
		}
		g.mu.Unlock()
	})
}

// syncer runs the push-pulls asked for by members joining: after one
// joins it waits a moment for others (a healed partition brings many
// back at once) and syncs with one of them at random.
func (g *Gossip) syncer(ctx context.Context) {
	for {
		var joined []string
		select {
		case <-ctx.Done():
			return
		case addr := <-g.sync:
			joined = append(joined, addr)
		}
		window := time.NewTimer(300 * time.Millisecond)
	collect:
		for {
			select {
			case <-ctx.Done():
				window.Stop()
				return
			case addr := <-g.sync:
				joined = append(joined, addr)
			case <-window.C:
				break collect
			}
		}
		addr := joined[mrand.IntN(len(joined))]
		if _, err := g.ml.Join([]string{addr}); err != nil {
			g.log.Debug("gossip: push-pull failed", "member", addr, "err", err)
		}
	}
}

// Members lists the members this registry counts live (alive or suspect:
// memberlist does not say which), itself first.
func (g *Gossip) Members() []*shoalv1.Member {
	local := g.ml.LocalNode()
	out := []*shoalv1.Member{memberToWire(local)}
	for _, n := range g.ml.Members() {
		if n.Name != local.Name {
			out = append(out, memberToWire(n))
		}
	}
	return out
}

func memberToWire(n *memberlist.Node) *shoalv1.Member {
	return &shoalv1.Member{Name: n.Name, Address: string(n.Meta), GossipAddress: n.Address()}
}

// changed queues a change made at this registry. Every change goes in
// the next batch, sent to every member over TCP: that is what delivers
// it. An entry also goes out as gossip at once when gossip is quiet and
// it fits a packet, which brings it to most members within a few rounds.
func (g *Gossip) changed(c Change) {
	g.mu.Lock()
	if !c.Full {
		if b := g.pending[c.ID]; b != nil && b.digest() == c.Digest {
			b.extend(c.Expires) // for members the entry reaches after the refresh
		}
		if cur, ok := g.batch[c.ID]; ok && cur.Full {
			cur.Expires = c.Expires // the batch's entry carries the new lease
			g.batch[c.ID] = cur
			g.mu.Unlock()
			return
		}
	}
	g.batch[c.ID] = c
	if prev, ok := g.recent[c.ID]; ok && prev.Full && !c.Full {
		prev.Expires = c.Expires
		c = prev.Change
	}
	g.recent[c.ID] = recentChange{Change: c, at: time.Now()}
	g.mu.Unlock()
	if c.Full && g.queue.NumQueued() < quietQueue {
		g.queueEntry(c.LeasedPeer)
	}
}

// batcher sends the batch to every member each BatchInterval.
func (g *Gossip) batcher(ctx context.Context) {
	t := time.NewTicker(g.cfg.BatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.flush(ctx)
	}
}

// flush sends the batch to every other member over TCP, in parallel.
func (g *Gossip) flush(ctx context.Context) {
	g.mu.Lock()
	changes := g.batch
	g.batch = map[string]Change{}
	g.mu.Unlock()
	if len(changes) == 0 {
		return
	}
	msgs := encodeBatch(changes)
	g.mu.Lock()
	for id, r := range g.recent {
		if time.Since(r.at) > recentWindow {
			delete(g.recent, id)
		}
	}
	g.mu.Unlock()
	var done []chan struct{}
	for _, n := range g.ml.Members() {
		if n.Name != g.name {
			if ch := g.send(n, msgs); ch != nil {
				done = append(done, ch)
			}
		}
	}
	// A member that accepts and never reads holds its send, and only its
	// own, until the stream's deadline (outboundDeadline: memberlist's
	// SendReliable sets none). The batcher waits twice memberlist's dial
	// timeout (a send to a member that reads ends well within it) and goes
	// on; batches for that member wait behind its send.
	limit := time.NewTimer(2 * tcpTimeout)
	defer limit.Stop()
	for _, ch := range done {
		select {
		case <-ch:
		case <-limit.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// memberSend is a send under way to one member, and the batches that came
// while it ran: they follow it, in order.
type memberSend struct {
	backlog [][]byte // guarded by Gossip.mu
	bytes   int      // backlog's size; guarded by Gossip.mu
}

// maxBacklog bounds the batches waiting for one member, in bytes; past it
// they are dropped and push-pull repairs what they carried.
const maxBacklog = 4 * maxBatch

// send delivers batch messages to one member in a goroutine of its own,
// stopping at the first failure (push-pull repairs the rest), and returns
// a channel closed when it ends. While a send to n is under way, msgs wait
// behind it and send returns nil: a member coming back is sent what it
// missed (NotifyJoin), which its inbound streams take a while to read, and
// the batches flushed meanwhile were once dropped for it, so it did not
// agree until a push-pull brought them.
func (g *Gossip) send(n *memberlist.Node, msgs [][]byte) chan struct{} {
	g.mu.Lock()
	if ms := g.sending[n.Name]; ms != nil {
		for _, m := range msgs {
			if ms.bytes+len(m) > maxBacklog {
				g.log.Debug("gossip: batch dropped, member reads slowly", "member", n.Name)
				break
			}
			ms.backlog = append(ms.backlog, m)
			ms.bytes += len(m)
		}
		g.mu.Unlock()
		return nil
	}
	ms := &memberSend{}
	g.sending[n.Name] = ms
	g.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, m := range msgs {
				if err := g.sendMsg(n, m); err != nil {
					g.log.Debug("gossip: batch not delivered", "member", n.Name, "err", err)
					g.mu.Lock()
					delete(g.sending, n.Name)
					g.mu.Unlock()
					return
				}
			}
			g.mu.Lock()
			if len(ms.backlog) == 0 {
				delete(g.sending, n.Name)
				g.mu.Unlock()
				return
			}
			msgs, ms.backlog, ms.bytes = ms.backlog, nil, 0
			g.mu.Unlock()
		}
	}()
	return done
}

// encodeBatch is changes as batch messages of at most about maxBatch bytes.
func encodeBatch(changes map[string]Change) [][]byte {
	var msgs [][]byte
	w := &shoalv1.GossipBatch{}
	size := 0
	for _, c := range changes {
		if c.Full {
			e := entryToWire(c.LeasedPeer)
			w.Entries = append(w.Entries, e)
			size += proto.Size(e) + 4
		} else {
			w.Refreshes = append(w.Refreshes, &shoalv1.GossipRefresh{ExpiresUnixMs: unixMs(c.Expires), PeerId: c.ID, Digest: c.Digest})
			size += len(c.ID) + 24
		}
		if size > maxBatch {
			msgs = append(msgs, marshalBatch(w))
			w, size = &shoalv1.GossipBatch{}, 0
		}
	}
	return append(msgs, marshalBatch(w))
}

func marshalBatch(w *shoalv1.GossipBatch) []byte {
	b, _ := proto.Marshal(w)
	return append([]byte{gossipBatch}, b...)
}

// queueEntry gossips an entry that fits a packet.
func (g *Gossip) queueEntry(e LeasedPeer) {
	b := &entryBroadcast{g: g, e: e}
	if len(b.Message()) > maxGossipMsg {
		return // the batch carries it
	}
	g.mu.Lock()
	g.pending[e.ID] = b
	g.mu.Unlock()
	g.queue.QueueBroadcast(b)
}

// unixMs is t's wall-clock time in Unix milliseconds, as the wire carries
// an expiry.
func unixMs(t time.Time) uint64 { return uint64(max(0, t.UnixMilli())) }

// entryToWire is an entry as gossip carries it.
func entryToWire(e LeasedPeer) *shoalv1.GossipEntry {
	return &shoalv1.GossipEntry{ExpiresUnixMs: unixMs(e.Expires), Peer: peerToWire(e.Peer), Left: e.Left}
}

// learnedExpiry is when a lease another registry says ends at ms (Unix
// milliseconds, its clock) ends here: learnMargin earlier, for clocks that
// disagree. The result reads this host's monotonic clock.
func (g *Gossip) learnedExpiry(ms uint64) time.Time {
	now := time.Now()
	if ms > math.MaxInt64 {
		return now // expired: Merge drops it
	}
	return now.Add(time.UnixMilli(int64(ms)).Sub(now) - g.margin())
}

// entryFromWire reads a gossiped entry; false if malformed.
func (g *Gossip) entryFromWire(w *shoalv1.GossipEntry) (LeasedPeer, bool) {
	p, err := peerFromWire(w.GetPeer())
	if err != nil {
		return LeasedPeer{}, false
	}
	return LeasedPeer{Peer: p, Expires: g.learnedExpiry(w.GetExpiresUnixMs()), Left: w.GetLeft()}, true
}

func (g *Gossip) margin() time.Duration { return min(learnMargin, g.leases.Lease()/10) }

// entryBroadcast is a whole entry in the broadcast queue, named by its peer
// id so that a newer one replaces it.
type entryBroadcast struct {
	g  *Gossip
	mu sync.Mutex
	e  LeasedPeer // Expires extended by queued refreshes; guarded by mu
}

func (b *entryBroadcast) Name() string                          { return "e/" + b.e.ID }
func (b *entryBroadcast) Invalidates(memberlist.Broadcast) bool { return false }

func (b *entryBroadcast) Finished() {
	b.g.mu.Lock()
	if b.g.pending[b.e.ID] == b {
		delete(b.g.pending, b.e.ID)
	}
	b.g.mu.Unlock()
}

func (b *entryBroadcast) Message() []byte {
	b.mu.Lock()
	e := b.e
	b.mu.Unlock()
	msg, _ := proto.Marshal(entryToWire(e))
	return append([]byte{gossipEntry}, msg...)
}

func (b *entryBroadcast) digest() uint64 {
	if b.e.Left {
		return 0
	}
	return digestOf(b.e)
}

func (b *entryBroadcast) extend(expires time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if expires.After(b.e.Expires) {
		b.e.Expires = expires
	}
}

// receive applies one gossip message and passes on an entry that changed
// the table.
func (g *Gossip) receive(msg []byte) {
	if len(msg) < 1 {
		return
	}
	switch msg[0] {
	case gossipEntry:
		var w shoalv1.GossipEntry
		if proto.Unmarshal(msg[1:], &w) != nil {
			return
		}
		if e, ok := g.entryFromWire(&w); ok && g.leases.Merge([]LeasedPeer{e}) == 1 {
			g.queueEntry(e)
		}
	case gossipBatch:
		// Scanned as a table is: a member coming back gets batches of
		// everything that changed while it was away, from every member at
		// once, and decoding them whole was most of a heal's peak memory.
		entries, refreshes, err := scanBatch(msg[1:])
		if err != nil {
			return
		}
		g.mergeEntries(entries)
		for _, r := range refreshes {
			g.leases.Extend(r.id, r.digest, g.learnedExpiry(r.expires))
		}
	}
}

// stateReuse is how long a push-pull's table is handed to the next ones:
// when a partition heals several run at once, and each encoded its own
// copy, which memberlist then held while it sent it. A table that much
// older is brought up to date by the batches that follow it.
const stateReuse = time.Second

// state is the table for a push-pull, within MaxState bytes (a random
// sample beyond): a GossipState. Read-only once returned.
func (g *Gossip) state() []byte {
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	if g.shared != nil && time.Since(g.sharedAt) < stateReuse {
		return g.shared
	}
	peers := g.leases.statePeers()
	mrand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	b := make([]byte, 0, min(g.cfg.MaxState, g.lastState+g.lastState/8))
	var peer []byte
	for _, p := range peers {
		peer, _ = proto.MarshalOptions{}.MarshalAppend(peer[:0], peerToWire(p.Peer))
		e := stateEntry{expires: unixMs(p.Expires), left: p.Left, peer: peer}
		n := entryWireSize(e)
		if len(b)+1+protowire.SizeVarint(uint64(n))+n > g.cfg.MaxState {
			break
		}
		b = appendEntry(b, e)
	}
	g.lastState = len(b)
	g.shared, g.sharedAt = b, time.Now()
	if g.unshare == nil {
		g.unshare = time.AfterFunc(stateReuse, func() {
			g.stateMu.Lock()
			g.shared = nil
			g.stateMu.Unlock()
		})
	} else {
		g.unshare.Reset(stateReuse)
	}
	return b
}

func (g *Gossip) mergeState(buf []byte) {
	g.stateMu.Lock()
	defer g.stateMu.Unlock()
	if len(buf) > g.cfg.MaxState+(1<<20) {
		return
	}
	entries, err := scanState(buf)
	if err != nil {
		return
	}
	g.mergeEntries(entries)
}

// mergeEntries merges scanned entries of a table or batch. Most are what
// this registry holds already: only entries that could change the table
// are decoded.
func (g *Gossip) mergeEntries(entries []stateEntry) {
	if len(entries) == 0 {
		return
	}
	ids, expires, left := make([]string, len(entries)), make([]time.Time, len(entries)), make([]bool, len(entries))
	for i, e := range entries {
		ids[i], expires[i], left[i] = e.id, g.learnedExpiry(e.expires), e.left
	}
	fresh := g.leases.Newer(ids, expires, left)
	in := make([]LeasedPeer, 0, len(entries))
	for i, e := range entries {
		if !fresh[i] {
			continue
		}
		var w shoalv1.PeerInfo
		if proto.Unmarshal(e.peer, &w) != nil {
			continue
		}
		if p, err := peerFromWire(&w); err == nil {
			in = append(in, LeasedPeer{Peer: p, Expires: expires[i], Left: left[i]})
		}
	}
	g.leases.Merge(in)
}

// gossipDelegate is memberlist's view of the registry.
type gossipDelegate Gossip

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	return []byte(d.grpc)[:min(len(d.grpc), limit)]
}
func (d *gossipDelegate) NotifyMsg(msg []byte) { (*Gossip)(d).receive(msg) }
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}
func (d *gossipDelegate) LocalState(bool) []byte                 { return (*Gossip)(d).state() }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool) { (*Gossip)(d).mergeState(buf) }

// gossipEvents follows members coming and going.
type gossipEvents Gossip

// NotifyJoin: a member new or back (a partition healing) gets the changes
// made here in the last recentWindow; a member new, or back after a long
// absence, also gets our table and gives us its own soon (syncer), rather
// than at the next random push-pull.
func (ev *gossipEvents) NotifyJoin(n *memberlist.Node) {
	if n.Name == ev.name {
		return
	}
	ev.mu.Lock()
	f, back := ev.failed[n.Name]
	delete(ev.failed, n.Name)
	// A member back after a short absence gets, from each member, the
	// changes made there since (recentWindow, which also covers the time
	// it took to find the member dead): a push-pull of whole tables with it
	// would only repeat them, and at a partition's heal those were dozens
	// at once, queued behind each other (inboundStreams).
	briefly := back && time.Since(f.since) < recentWindow-30*time.Second
	// A new member gets them too: a registry that announced peers before
	// its join succeeded (its seed not answering yet) flushed them to no
	// one, and its join's push-pull reached only some members.
	missed := make(map[string]Change, len(ev.recent))
	for id, r := range ev.recent {
		missed[id] = r.Change
	}
	ev.mu.Unlock()
	if len(missed) > 0 {
		node := *n
		(*Gossip)(ev).send(&node, encodeBatch(missed)) // in its own goroutine: memberlist holds its lock here
	}
	if briefly {
		return
	}
	select {
	case ev.sync <- n.Address():
	default: // many at once: the periodic push-pull covers the rest
	}
}

// NotifyLeave: a member gone is tried again. memberlist does not tell a
// failed member from one that left (n.State is not kept up to date here):
// one that left fails each try at once, and is tried less often after a
// while.
func (ev *gossipEvents) NotifyLeave(n *memberlist.Node) {
	if n.Name == ev.name {
		return // this registry leaving
	}
	ev.mu.Lock()
	ev.failed[n.Name] = failedMember{addr: n.Address(), grpc: string(n.Meta), since: time.Now()}
	ev.mu.Unlock()
	ev.log.Info("gossip: member gone", "member", n.Name)
}

func (ev *gossipEvents) NotifyUpdate(*memberlist.Node) {}

// memberlistLog passes memberlist's log lines ("[LEVEL] memberlist: ...")
// to slog at their level; errors, mostly unreachable members, as warnings.
type memberlistLog struct{ l *slog.Logger }

func (w memberlistLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	for prefix, l := range map[string]slog.Level{"[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelWarn} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			line, level = strings.TrimSpace(rest), l
		}
	}
	line = strings.TrimPrefix(line, "[DEBUG] ")
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}
