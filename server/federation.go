package server

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// maxExchange is the default cap on entries per exchange message.
const maxExchange = 2000

// FederationConfig configures the exchange between registries.
//
// Registries federate by push-pull over RegistryService.Exchange rather
// than through a membership library: the entries already carry leases, so
// membership is simply "who answered lately", the exchange rides on the
// gRPC port every peer already opens (no second UDP/TCP port to configure
// and firewall), and sizes and rates stay under our control.
type FederationConfig struct {
	// Self is this registry's address as others should call it.
	Self string
	// Join lists registries to exchange with from the start.
	Join []string
	// Interval is the time between exchange rounds. Each round calls every
	// known registry once. Default 2 s.
	Interval time.Duration
	// MaxEntries caps entries per exchange message (a random sample when
	// the table is larger), bounding message size and merge work. Default
	// 2000.
	MaxEntries int
	// MaxRegistries caps how many registries are remembered. Default 64.
	MaxRegistries int
	// DialOptions are used to reach other registries.
	DialOptions []grpc.DialOption
	// Logger receives failed exchanges at debug level.
	Logger *slog.Logger
}

// Federation runs exchange rounds with other registries.
type Federation struct {
	cfg    FederationConfig
	leases *Leases

	mu    sync.Mutex
	known map[string]*grpc.ClientConn // by address; nil until dialled; guarded by mu
}

// NewFederation prepares exchanges for leases; call Run to start them.
func NewFederation(cfg FederationConfig, leases *Leases) *Federation {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = maxExchange
	}
	if cfg.MaxRegistries <= 0 {
		cfg.MaxRegistries = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialOptions == nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	f := &Federation{cfg: cfg, leases: leases, known: map[string]*grpc.ClientConn{}}
	for _, a := range cfg.Join {
		f.learn(a)
	}
	return f
}

// learn remembers a registry address, up to MaxRegistries.
func (f *Federation) learn(addr string) {
	if addr == "" || addr == f.cfg.Self {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.known[addr]; !ok && len(f.known) < f.cfg.MaxRegistries {
		f.known[addr] = nil
	}
}

// Run exchanges with every known registry each Interval until ctx ends.
func (f *Federation) Run(ctx context.Context) {
	defer f.closeAll()
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		f.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Round runs one exchange with each known registry, in parallel.
func (f *Federation) Round(ctx context.Context) {
	f.mu.Lock()
	addrs := make([]string, 0, len(f.known))
	for a := range f.known {
		addrs = append(addrs, a)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range addrs {
		wg.Go(func() {
			if err := f.exchange(ctx, a); err != nil {
				f.cfg.Logger.Debug("exchange failed", "registry", a, "err", err)
			}
		})
	}
	wg.Wait()
}

func (f *Federation) exchange(ctx context.Context, addr string) error {
	cc, err := f.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Interval)
	defer cancel()
	now := f.leases.cfg.Now()
	resp, err := shoalv1.NewRegistryServiceClient(cc).Exchange(ctx, &shoalv1.ExchangeRequest{
		From:  f.cfg.Self,
		Peers: leasedToWire(f.leases.Snapshot(f.cfg.MaxEntries), now),
	})
	if err != nil {
		return err
	}
	in := resp.GetPeers()
	if len(in) > f.cfg.MaxEntries {
		in = in[:f.cfg.MaxEntries]
	}
	f.leases.Merge(leasedFromWire(in, f.leases.cfg.Now()))
	return nil
}

func (f *Federation) conn(addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cc := f.known[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, append(slices.Clone(f.cfg.DialOptions), registryLinkOptions...)...)
	if err != nil {
		return nil, err
	}
	f.known[addr] = cc
	return cc, nil
}

func (f *Federation) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a, cc := range f.known {
		if cc != nil {
			cc.Close()
			f.known[a] = nil
		}
	}
}
