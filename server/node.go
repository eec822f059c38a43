package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
)

// NodeConfig configures a Node: one gRPC listener carrying a PeerService
// for a folder (if Dir is set) and a RegistryService.
type NodeConfig struct {
	// Dir is the shared folder; empty runs a registry alone (or serves
	// Files).
	Dir string
	// IndexPath keeps the folder's hashes across restarts; empty: every
	// start rehashes.
	IndexPath string
	// Listener is where the node serves. Required.
	Listener net.Listener
	// Advertise is the address announced to registries; empty means the
	// listener's address.
	Advertise string
	// PeerID identifies the node to registries, 1 to 64 bytes; empty picks
	// a random one.
	PeerID string
	// Registries are remote registries to announce this node's files to.
	Registries []string
	// Join lists registries (gRPC addresses) this node's registry joins
	// in a federation (gossip).
	Join []string
	// Federate makes the registry gossip without Join, so that others can
	// join it (`shoal registry`).
	Federate bool
	// Gossip configures the federation, which runs with Join or Federate.
	// With Server.Token set it needs Gossip.Key.
	Gossip GossipConfig
	// RescanInterval is how often the folder is rescanned for changes (a
	// file seen changed is rescanned at once). Default 1 min.
	RescanInterval time.Duration
	// Lease configures the node's own registry; zero fields take
	// DefaultLeaseConfig's.
	Lease LeaseConfig
	// Peer configures the PeerService (limits, upload throttle); zero
	// fields take DefaultPeerConfig's.
	Peer PeerConfig
	// Server configures the gRPC server wiring.
	Server Config
	// Files, if set, is served instead of a store opened on Dir. It lets a
	// downloader serve the chunks it holds.
	Files Files
	// Holdings, if set, lists what the node announces; by default the
	// Files' own Holdings method, when it has one.
	Holdings func() []FileInfo
	// DialOptions reach other registries. Default: plaintext.
	DialOptions []grpc.DialOption
	// Logger receives the node's logs. Default: discarded.
	Logger *slog.Logger
	// Metrics, if set, counts this node in the process's metrics.
	Metrics *Metrics
}

// Node runs one peer (or a bare registry) until its context ends.
type Node struct {
	cfg    NodeConfig
	store  *chunkstore.Store
	leases *Leases
	gossip *Gossip
	srv    *Server
	stats  Stats

	killed    atomic.Bool // Kill was called: stop without leaving
	kickMu    sync.Mutex
	kick      chan struct{} // closed by Reannounce, then replaced; guarded by kickMu
	ready     chan struct{} // closed once the folder is hashed and self-registered
	announced chan struct{} // closed after the first announce to every remote registry
}

// NewNode builds a node; Run starts it.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Listener == nil {
		return nil, fmt.Errorf("node: no listener")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = cfg.Listener.Addr().String()
	}
	if cfg.PeerID == "" {
		var b [8]byte
		rand.Read(b[:])
		cfg.PeerID = hex.EncodeToString(b[:])
	}
	if cfg.RescanInterval <= 0 {
		cfg.RescanInterval = time.Minute
	}
	if cfg.DialOptions == nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = cfg.Logger
	}
	n := &Node{cfg: cfg, ready: make(chan struct{}), announced: make(chan struct{}), kick: make(chan struct{})}
	if cfg.Metrics != nil {
		cfg.Server.Options = append(cfg.Server.Options, cfg.Metrics.serverOptions()...)
	}
	if cfg.Files == nil && cfg.Dir != "" {
		var onChange func()
		if cfg.Metrics != nil {
			onChange = cfg.Metrics.fileChanged
		}
		st, err := chunkstore.Open(chunkstore.Config{Dir: cfg.Dir, IndexPath: cfg.IndexPath, Logger: cfg.Logger, OnChange: onChange})
		if err != nil {
			return nil, err
		}
		n.store = st
		cfg.Files = StoreFiles{Store: st}
		n.cfg.Files = cfg.Files
	}
	n.leases = NewLeases(cfg.Lease)
	if len(cfg.Join) > 0 || cfg.Federate {
		if cfg.Server.Token != "" && len(cfg.Gossip.Key) == 0 {
			n.closeStore()
			return nil, fmt.Errorf("a registry with a token federates only with a gossip key (--gossip-key): without one, anyone reaching its gossip port could add entries")
		}
		gc := cfg.Gossip
		gc.Join = cfg.Join
		g, err := NewGossip(gc, cfg.Listener.Addr().String(), cfg.Advertise, n.leases, cfg.DialOptions, cfg.Logger)
		if err != nil {
			n.closeStore()
			return nil, err
		}
		n.gossip = g
	}
	reg := NewRegistryService(n.leases, n.gossip)
	if cfg.Metrics != nil {
		// A peer that announces elsewhere keeps a registry mostly of itself;
		// counting it too would count that peer twice.
		var counted *Leases
		if len(cfg.Registries) == 0 {
			counted = n.leases
		}
		cfg.Metrics.track(&n.stats, counted)
	}
	if cfg.Files != nil {
		n.srv = New(cfg.Server, NewPeerService(cfg.Files, cfg.Peer, &n.stats), reg)
	} else {
		n.srv = New(cfg.Server, nil, reg)
	}
	return n, nil
}

// Addr is the address the node announces.
func (n *Node) Addr() string { return n.cfg.Advertise }

// ID is the node's peer id.
func (n *Node) ID() string { return n.cfg.PeerID }

// Store is the node's chunk store, nil for a registry or a Files node.
func (n *Node) Store() *chunkstore.Store { return n.store }

// Leases is the node's registry table.
func (n *Node) Leases() *Leases { return n.leases }

// Stats counts what the node served.
func (n *Node) Stats() *Stats { return &n.stats }

// Server is the node's gRPC server.
func (n *Node) Server() *Server { return n.srv }

// Ready is closed once the node serves: folder hashed, files registered in
// its own registry.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Announced is closed once every remote registry accepted an announce.
func (n *Node) Announced() <-chan struct{} { return n.announced }

// holdings lists the files the node announces.
func (n *Node) holdings() []FileInfo {
	var out []FileInfo
	if n.cfg.Holdings != nil {
		out = n.cfg.Holdings()
	} else if h, ok := n.cfg.Files.(interface{ Holdings() []FileInfo }); ok {
		out = h.Holdings()
	}
	if n.cfg.Peer.SuperSeed {
		// A super-seeder shows each client only some chunks at a time:
		// clients must follow its WatchHave feed.
		for i := range out {
			out[i].Partial, out[i].HidesChunks = true, true
		}
	}
	return out
}

func (n *Node) self() Peer {
	return Peer{ID: n.cfg.PeerID, Addr: n.cfg.Advertise, Files: n.holdings()}
}

// Run serves until ctx ends, then leaves the registries and stops.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if n.store != nil {
		defer n.store.Close()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- n.srv.Serve(ctx, n.cfg.Listener) }()
	if n.gossip != nil {
		wg.Go(func() { n.gossip.Run(ctx) })
	}

	if n.store != nil {
		if err := n.store.Scan(ctx); err != nil {
			cancel()
			<-serveErr
			return err
		}
		wg.Go(func() { n.store.Watch(ctx, n.cfg.RescanInterval, n.Reannounce) })
	}
	if n.cfg.Files != nil {
		wg.Go(func() { n.selfAnnounce(ctx) })
	} else {
		close(n.ready)
	}
	n.srv.SetServing(true)
	var (
		pending    sync.WaitGroup
		rejectOnce sync.Once
		rejected   = make(chan error, 1) // the first registry refusing the token
	)
	for _, addr := range n.cfg.Registries {
		cc, err := grpc.NewClient(addr, append(slices.Clone(n.cfg.DialOptions), registryLinkOptions...)...)
		if err != nil {
			cancel()
			<-serveErr
			return fmt.Errorf("registry %s: %w", addr, err)
		}
		var once sync.Once
		pending.Add(1)
		wg.Go(func() {
			defer cc.Close()
			Announce(ctx, AnnouncerConfig{
				Conn: cc, Peer: n.self, Logger: n.cfg.Logger.With("registry", addr),
				Announced: func() { once.Do(pending.Done) },
				SkipLeave: n.killed.Load,
				Kick:      n.kicked,
				Rejected: func(err error) {
					rejectOnce.Do(func() {
						rejected <- fmt.Errorf("registry %s rejected the token (--token or SHOAL_TOKEN): %s", addr, status.Convert(err).Message())
						cancel()
					})
				},
			})
			once.Do(pending.Done)
		})
	}
	wg.Go(func() { pending.Wait(); close(n.announced) })
	err := <-serveErr
	select {
	case r := <-rejected:
		return r
	default:
		return err
	}
}

// selfAnnounce keeps the node's own files in its own registry.
func (n *Node) selfAnnounce(ctx context.Context) {
	first := true
	secret := ""
	for {
		if _, s, err := n.leases.Announce(n.self(), secret); err != nil {
			n.cfg.Logger.Warn("self-announce failed", "err", err)
		} else {
			secret = s
		}
		if first {
			close(n.ready)
			first = false
		}
		kick := n.kicked()
		t := time.NewTimer(n.leases.Lease() / 3)
		select {
		case <-kick:
			t.Stop()
			continue
		case <-ctx.Done():
			t.Stop()
			_ = n.leases.Leave(n.cfg.PeerID, secret)
			return
		case <-t.C:
		}
	}
}

// Gossip is the node's federation, nil when it does not federate.
func (n *Node) Gossip() *Gossip { return n.gossip }

func (n *Node) closeStore() {
	if n.store != nil {
		n.store.Close()
	}
}

// Kill stops the node abruptly, as a crash would: connections are cut at
// once and no registry is told. Run returns after Kill.
func (n *Node) Kill() {
	n.killed.Store(true)
	n.srv.grpc.Stop()
}

// Reannounce sends the node's registration now, to its own registry and to
// every remote one: call it when what the node holds changed.
func (n *Node) Reannounce() {
	n.kickMu.Lock()
	defer n.kickMu.Unlock()
	close(n.kick)
	n.kick = make(chan struct{})
}

func (n *Node) kicked() <-chan struct{} {
	n.kickMu.Lock()
	defer n.kickMu.Unlock()
	return n.kick
}
