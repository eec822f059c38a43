// Package cluster runs a registry and several peers in one process on
// loopback: the engine of `shoal cluster` and `shoal demo`, and the fixture
// of tests that need a real network of peers.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoalnet/shoal/chunkstore"
	"github.com/shoalnet/shoal/server"
)

// PeerSpec shapes one peer of the cluster.
type PeerSpec struct {
	// Rate caps the peer's uploads in bytes per second; 0 is unlimited.
	Rate int64
	// Files, if set, is served instead of the cluster's folder.
	Files server.Files
	// Holdings goes with Files: what the peer announces (default: the
	// Files' own Holdings method).
	Holdings func() []server.FileInfo
	// SuperSeed makes the peer reveal chunks a few at a time, each to one
	// client, until all went out once: for a swarm's only seeder.
	SuperSeed bool
	// QuitAfter, if positive, kills the peer (no goodbye to the registry)
	// once it has served this many bytes.
	QuitAfter int64
	// Advertise, if set, maps the peer's listen address to the address it
	// announces: a proxy in front of it.
	Advertise func(listen string) string
}

// Config configures a cluster.
type Config struct {
	// Dir is the folder every peer serves (one shared, hashed store).
	Dir string
	// IndexPath keeps Dir's hashes across runs; empty disables.
	IndexPath string
	// Peers shapes each peer; its length is the peer count.
	Peers []PeerSpec
	// RegistryListen is the registry's listen address; empty is
	// 127.0.0.1:0.
	RegistryListen string
	// Lease is the registry's lease; 0 is the default.
	Lease time.Duration
	// RescanInterval is how often Dir is rescanned for added, edited and
	// removed files (a file seen changed while served is rescanned at
	// once); 0 means 5 s.
	RescanInterval time.Duration
	// Logger receives the nodes' logs; nil discards.
	Logger *slog.Logger
	// Metrics, if set, counts every node in the process's metrics.
	Metrics *server.Metrics
	// ServerOptions (TLS credentials, say) apply to every node's server.
	ServerOptions []grpc.ServerOption
	// DialOptions are how nodes reach the registry; nil is plaintext.
	DialOptions []grpc.DialOption
	// Token, if set, is required by the registry for announces, and sent
	// by the peers.
	Token string
}

// Cluster is a running registry and its peers.
type Cluster struct {
	Registry *server.Node
	Peers    []*server.Node
	Store    *chunkstore.Store // the shared store, nil without Dir

	cancel context.CancelFunc
	wg     sync.WaitGroup
	stops  map[*server.Node]func() // stop one node and wait; guarded by errMu
	opts   []grpc.ServerOption     // every node's extra server options
	dial   []grpc.DialOption       // how nodes dial the registry
	token  string                  // registry token
	errMu  sync.Mutex
	errs   []error // node failures; guarded by errMu
}

// Start hashes the folder, starts the registry and the peers, and returns
// once every peer is registered.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Cluster{cancel: cancel, stops: map[*server.Node]func(){}}
	fail := func(err error) (*Cluster, error) { c.Close(); return nil, err }
	if cfg.Dir != "" {
		st, err := chunkstore.Open(chunkstore.Config{Dir: cfg.Dir, IndexPath: cfg.IndexPath, Logger: cfg.Logger})
		if err != nil {
			return fail(err)
		}
		c.Store = st
		if err := st.Scan(ctx); err != nil {
			return fail(err)
		}
	}
	listen := cfg.RegistryListen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	c.opts, c.dial, c.token = cfg.ServerOptions, cfg.DialOptions, cfg.Token
	reg, err := c.start(ctx, listen, server.NodeConfig{Lease: server.LeaseConfig{Lease: cfg.Lease}, Logger: cfg.Logger.With("node", "registry"), Metrics: cfg.Metrics}, nil)
	if err != nil {
		return fail(err)
	}
	c.Registry = reg
	for i, spec := range cfg.Peers {
		files, holdings := spec.Files, spec.Holdings
		if files == nil {
			if c.Store == nil {
				return fail(fmt.Errorf("peer %d: no folder and no files to serve", i))
			}
			files = server.StoreFiles{Store: c.Store}
		}
		if h, ok := files.(interface{ Holdings() []server.FileInfo }); ok && holdings == nil {
			holdings = h.Holdings // before a wrapper hides the method
		}
		var node atomic.Pointer[server.Node]
		if spec.QuitAfter > 0 {
			left := &atomic.Int64{}
			left.Store(spec.QuitAfter)
			files = quitFiles{Files: files, left: left, kill: func() { node.Load().Kill() }}
		}
		pc := server.DefaultPeerConfig()
		pc.Throttle = server.NewThrottle(spec.Rate)
		pc.SuperSeed = spec.SuperSeed
		n, err := c.start(ctx, "127.0.0.1:0", server.NodeConfig{
			Files: files, Holdings: holdings, Registries: []string{reg.Addr()},
			Peer: pc, PeerID: fmt.Sprintf("peer-%d", i+1), Logger: cfg.Logger.With("node", i+1), Metrics: cfg.Metrics,
		}, spec.Advertise)
		if err != nil {
			return fail(err)
		}
		node.Store(n)
		c.Peers = append(c.Peers, n)
	}
	for _, p := range c.Peers {
		select {
		case <-p.Announced():
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	if c.Store != nil {
		every := cfg.RescanInterval
		if every <= 0 {
			every = 5 * time.Second
		}
		peers := slices.Clone(c.Peers)
		c.wg.Go(func() {
			c.Store.Watch(ctx, every, func() {
				for _, p := range peers {
					p.Reannounce()
				}
			})
		})
	}
	return c, nil
}

// StartPeer adds a peer to a running cluster and waits for its announce.
func (c *Cluster) StartPeer(ctx context.Context, cfg server.NodeConfig) (*server.Node, error) {
	cfg.Registries = append(cfg.Registries, c.Registry.Addr())
	n, err := c.start(ctx, "127.0.0.1:0", cfg, nil)
	if err != nil {
		return nil, err
	}
	select {
	case <-n.Announced():
		return n, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// start runs one node until the cluster closes.
func (c *Cluster) start(ctx context.Context, listen string, cfg server.NodeConfig, advertise func(string) string) (*server.Node, error) {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", listen, err)
	}
	cfg.Listener = lis
	if advertise != nil {
		cfg.Advertise = advertise(lis.Addr().String())
	}
	cfg.Server.Options = append(cfg.Server.Options, c.opts...)
	cfg.Server.Token = c.token
	if c.dial != nil {
		cfg.DialOptions = append([]grpc.DialOption(nil), c.dial...)
	}
	if c.token != "" {
		if cfg.DialOptions == nil {
			cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		}
		cfg.DialOptions = append(cfg.DialOptions, server.TokenDialOption(c.token))
	}
	n, err := server.NewNode(cfg)
	if err != nil {
		lis.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	c.wg.Go(func() {
		defer close(done)
		defer cancel()
		if err := n.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			c.errMu.Lock()
			c.errs = append(c.errs, fmt.Errorf("node %s: %w", n.Addr(), err))
			c.errMu.Unlock()
		}
	})
	c.errMu.Lock()
	c.stops[n] = func() { cancel(); <-done }
	c.errMu.Unlock()
	select {
	case <-n.Ready():
		return n, nil
	case <-done:
		return nil, fmt.Errorf("node %s stopped while starting", n.Addr())
	}
}

// Stop stops one node gracefully, as Ctrl-C would: it leaves the registry
// and finishes the calls under way. It returns once the node is stopped.
func (c *Cluster) Stop(n *server.Node) {
	c.errMu.Lock()
	stop := c.stops[n]
	c.errMu.Unlock()
	if stop != nil {
		stop()
	}
}

// Close stops every node (each leaves the registry) and waits for them.
// It returns the errors nodes failed with, if any.
func (c *Cluster) Close() error {
	c.cancel()
	c.wg.Wait()
	if c.Store != nil {
		c.Store.Close()
	}
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return errors.Join(c.errs...)
}

// quitFiles kills its node once the node served quitAfter bytes: a peer
// that leaves half way through a download.
type quitFiles struct {
	server.Files
	left *atomic.Int64
	kill func()
}

func (q quitFiles) OpenChunks(id chunkstore.ID) (server.ChunkReader, error) {
	r, err := q.Files.OpenChunks(id)
	if err != nil {
		return nil, err
	}
	return quitReader{r, q}, nil
}

type quitReader struct {
	server.ChunkReader
	q quitFiles
}

func (r quitReader) ReadChunk(i int, buf []byte) ([]byte, error) {
	b, err := r.ChunkReader.ReadChunk(i, buf)
	if err == nil && r.q.left.Add(-int64(len(b))) <= 0 {
		go r.q.kill()
		return nil, fmt.Errorf("peer quitting: %w", chunkstore.ErrNotFound)
	}
	return b, err
}
