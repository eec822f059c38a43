package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/shoalnet/shoal/course"
	"github.com/shoalnet/shoal/server"
)

// nodeFlags are the flags shared by serve and registry.
type nodeFlags struct {
	conn      connFlags
	limits    server.Limits
	maxPeers  int
	metrics   string
	listen    string
	advertise string
	join      []string
	lease     time.Duration
	gossip    string
	gossipKey string
}

func (f *nodeFlags) register(cmd *cobra.Command, defListen string) {
	cmd.Flags().StringVar(&f.listen, "listen", defListen, "address to serve gRPC on (host:port; port 0 picks a free one)")
	cmd.Flags().StringVar(&f.advertise, "advertise", "", "address other peers should use to reach this one (default: the listen address)")
	cmd.Flags().StringSliceVar(&f.join, "join", nil, "registries to federate with (gossip), comma-separated host:port list of their gRPC addresses; one member is enough")
	cmd.Flags().StringVar(&f.gossip, "gossip", "", "address to gossip with other registries on, UDP and TCP (host:port; default: the listen host and a free port)")
	cmd.Flags().StringVar(&f.gossipKey, "gossip-key", "", "base64 key of 16, 24 or 32 bytes that encrypts and authenticates gossip between registries; required with --token (default $SHOAL_GOSSIP_KEY; make one with: head -c 32 /dev/urandom | base64)")
	f.conn.register(cmd, true)
	def := server.DefaultLimits()
	cmd.Flags().Float64Var(&f.limits.RequestsPerSecond, "max-rps", def.RequestsPerSecond, "calls per second one client IP may start (health and reflection exempt); 0 or less: no limit")
	cmd.Flags().IntVar(&f.limits.StreamsPerConn, "max-streams-per-conn", def.StreamsPerConn, "calls one connection may have open at once; 0 or less: no limit")
	cmd.Flags().IntVar(&f.maxPeers, "max-peers", server.DefaultLeaseConfig().MaxPeers, "registrations this node's registry holds at most")
	cmd.Flags().StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (host:port); off when empty")
	cmd.Flags().DurationVar(&f.lease, "lease", server.DefaultLeaseConfig().Lease, "lease this node's registry grants; peers re-announce every third of it")
}

func newServeCmd(g *globals) *cobra.Command {
	var (
		nf           nodeFlags
		dir          string
		rate         byteSize
		registries   []string
		index        string
		superSeed    bool
		maxUploads   int
		maxPerClient int
		maxChunks    int
		coursePort   int
	)
	cmd := &cobra.Command{
		Use:   "serve --dir DIR",
		Short: "Serve a folder to other peers (PeerService and RegistryService)",
		Example: `  shoal serve --dir ./shared --listen 127.0.0.1:7070
  shoal serve --dir ./shared --registry 127.0.0.1:7000 --rate 10M`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if dir == "" {
				return usageError{fmt.Errorf("--dir is required")}
			}
			if fi, err := os.Stat(dir); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return usageError{fmt.Errorf("--dir %s: does not exist", dir)}
				}
				return usageError{fmt.Errorf("--dir %s: %w", dir, err)}
			} else if !fi.IsDir() {
				return usageError{fmt.Errorf("--dir %s: not a folder", dir)}
			}
			if len(registries) == 0 {
				registries = envList("SHOAL_REGISTRY")
			}
			if registries, err = registryList(cmd.Context(), "--registry", registries); err != nil {
				return err
			}
			if rate < 0 {
				return usageError{fmt.Errorf("--rate %d: must be 0 (unlimited) or more", rate)}
			}
			if index == "" {
				index = defaultIndexPath(dir)
			}
			scfg, dial, err := nf.serverConfig(cmd.Context(), log)
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", nf.listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			pc := server.DefaultPeerConfig()
			pc.Throttle = server.NewThrottle(int64(rate))
			pc.SuperSeed = superSeed
			pc.MaxUploads, pc.MaxChunksPerRequest = maxUploads, maxChunks
			if maxUploads <= 0 {
				pc.MaxUploads = -1 // the flag's 0 is the config's "no limit"
			}
			pc.MaxUploadsPerClient = maxPerClient
			if maxPerClient <= 0 {
				pc.MaxUploadsPerClient = -1
			}
			lc := nf.leaseConfig()
			gc, err := nf.gossipConfig(len(nf.join) > 0 || nf.gossip != "")
			if err != nil {
				lis.Close()
				return err
			}
			// Every goroutine of the command is one of jobs: the node, the
			// metrics and course servers; each error ends them all.
			stop, cancel := context.WithCancel(cmd.Context())
			jobs, ctx := errgroup.WithContext(stop)
			defer jobs.Wait()
			defer cancel() // first: a failed start ends the jobs begun
			metrics, err := nf.startMetrics(ctx, jobs, g)
			if err != nil {
				lis.Close()
				return err
			}
			node, err := server.NewNode(server.NodeConfig{
				Metrics: metrics, Dir: dir, IndexPath: index, Listener: lis, Advertise: nf.advertise,
				Registries: registries, Join: nf.join, Federate: nf.gossip != "", Gossip: gc, Lease: lc, Peer: pc,
				Server: scfg, DialOptions: dial, Logger: log,
			})
			if err != nil {
				lis.Close()
				return err
			}
			log.Info("serving", "dir", dir, "addr", node.Addr(), "peer_id", node.ID(), "tls", nf.conn.tls.Enabled(), "token", nf.conn.token != "", "registries", registries)
			if coursePort > 0 {
				host, _, _ := net.SplitHostPort(node.Addr())
				cs, err := course.NewServer(course.ServerConfig{
					Store: node.Store(), ListenIP: host, TrackerPort: coursePort, Ports: 4, GradingPort: -1, Mode: course.Unlimited, Logger: log,
				})
				if err != nil {
					lis.Close()
					return fmt.Errorf("--course-tracker-port: %w", err)
				}
				log.Info("course protocol", "tracker", cs.TrackerAddr(), "fixed_port", cs.FixedAddr())
				jobs.Go(func() error { return cs.Run(ctx) })
			}
			jobs.Go(func() error {
				select {
				case <-node.Ready():
					files := node.Store().List()
					log.Info("folder hashed; ready", "files", len(files))
				case <-ctx.Done():
				}
				return nil
			})
			jobs.Go(func() error { return node.Run(ctx) })
			err = jobs.Wait()
			log.Info("stopped", "addr", node.Addr(), "err", err)
			return err
		},
	}
	nf.register(cmd, "127.0.0.1:7070")
	cmd.Flags().StringVar(&dir, "dir", "", "folder to share (required); files below it, not symlinks or dot-files, are served")
	cmd.Flags().Var(&rate, "rate", "upload limit per second for all streams together, as 10M or 512K; 0 means unlimited")
	cmd.Flags().StringSliceVar(&registries, "registry", nil, "registries to announce to, comma-separated host[:port] list (default $SHOAL_REGISTRY)")
	cmd.Flags().IntVar(&maxUploads, "max-uploads", server.DefaultPeerConfig().MaxUploads, "chunk streams served at once, over all clients; 0: no limit")
	cmd.Flags().IntVar(&maxPerClient, "max-uploads-per-client", server.DefaultPeerConfig().MaxUploadsPerClient, "chunk streams served at once to one client IP; 0: no limit")
	cmd.Flags().IntVar(&maxChunks, "max-chunks-per-request", server.DefaultPeerConfig().MaxChunksPerRequest, "chunks one GetChunks call may ask for")
	cmd.Flags().BoolVar(&superSeed, "super-seed", false, "reveal each chunk to one downloader at a time until all went out once (for a swarm's first seeder)")
	cmd.Flags().IntVar(&coursePort, "course-tracker-port", 0, "also serve the folder's top-level files over the course protocol, tracker on this UDP port")
	cmd.Flags().StringVar(&index, "index", "", "file keeping the folder's hashes across restarts (default: in the user cache folder)")
	return cmd
}

// defaultIndexPath keeps one index per shared folder in the user's cache.
func defaultIndexPath(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	sum := sha256.Sum256([]byte(abs))
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "shoal", "index-"+hex.EncodeToString(sum[:8]))
}

// envList reads a comma-separated list from an environment variable.
func envList(name string) []string {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// startMetrics listens for /metrics when --metrics is set, and adds its
// server to jobs; nil metrics otherwise.
func (f *nodeFlags) startMetrics(ctx context.Context, jobs *errgroup.Group, g *globals) (*server.Metrics, error) {
	if f.metrics == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", f.metrics)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	m := server.NewMetrics()
	jobs.Go(func() error {
		if err := server.ServeMetrics(ctx, lis, m); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		return nil
	})
	fmt.Fprintf(g.stderr, "metrics at http://%s/metrics\n", lis.Addr())
	return m, nil
}

// leaseConfig is the registry's configuration from the flags.
func (f *nodeFlags) leaseConfig() server.LeaseConfig {
	lc := server.DefaultLeaseConfig()
	lc.Lease = f.lease
	lc.MaxPeers = f.maxPeers
	return lc
}

// serverConfig is the gRPC server's configuration from the flags.
func (f *nodeFlags) serverConfig(ctx context.Context, log *slog.Logger) (server.Config, []grpc.DialOption, error) {
	join, err := registryList(ctx, "--join", f.join)
	if err != nil {
		return server.Config{}, nil, err
	}
	f.join = join
	opts, err := f.conn.serverOptions()
	if err != nil {
		return server.Config{}, nil, err
	}
	dial, err := f.conn.dialOptions()
	if err != nil {
		return server.Config{}, nil, err
	}
	l := f.limits
	if l.RequestsPerSecond <= 0 {
		l.RequestsPerSecond = -1
	}
	if l.StreamsPerConn <= 0 {
		l.StreamsPerConn = -1
	}
	return server.Config{Logger: log, Limits: l, Token: f.conn.token, Options: opts}, dial, nil
}

// gossipConfig is the federation's configuration from the flags, for a
// node that federates (a registry, or a peer with --join or --gossip).
func (f *nodeFlags) gossipConfig(federates bool) (server.GossipConfig, error) {
	gc := server.GossipConfig{Bind: f.gossip}
	if k := firstOf(f.gossipKey, os.Getenv("SHOAL_GOSSIP_KEY")); k != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
		if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			return gc, usageError{fmt.Errorf("--gossip-key must be base64 of 16, 24 or 32 bytes (head -c 32 /dev/urandom | base64)")}
		}
		gc.Key = key
	}
	if federates && f.conn.token != "" && gc.Key == nil {
		return gc, usageError{fmt.Errorf("--token needs --gossip-key on a registry that federates: without a key anyone reaching its gossip port could add entries (make one with: head -c 32 /dev/urandom | base64)")}
	}
	return gc, nil
}
