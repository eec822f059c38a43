package server

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

// AnnouncerConfig configures a peer's announcements to one registry.
type AnnouncerConfig struct {
	// Conn reaches the registry.
	Conn grpc.ClientConnInterface
	// Peer returns the registration to send; it is called before every
	// announce so the file list follows the store.
	Peer func() Peer
	// MinBackoff and MaxBackoff bound the wait between failed announces;
	// it doubles from MinBackoff. MaxBackoff is also capped at a third of
	// the last lease granted.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives state changes (registry lost, registry back).
	Logger *slog.Logger
	// Announced, if set, is called after each successful announce.
	Announced func()
	// Kick, if set, returns a channel closed when the peer's registration
	// changed and should be announced now rather than at the next refresh.
	Kick func() <-chan struct{}
	// Rejected, if set, is called when the registry refuses the peer's
	// credentials (Unauthenticated: a wrong or missing token), which no
	// retry can mend; Announce then returns.
	Rejected func(error)
	// SkipLeave, if set and true at shutdown, skips the Leave: the peer
	// vanishes as if killed and its lease runs out on its own.
	SkipLeave func() bool
}

// Announce keeps p registered until ctx ends: it re-announces every third
// of the lease, retries with backoff while the registry is down (so a
// restarted registry is healed within one lease), and leaves on the way out.
func Announce(ctx context.Context, cfg AnnouncerConfig) {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rc := shoalv1.NewRegistryServiceClient(cfg.Conn)
	every := 10 * time.Second
	backoff := cfg.MinBackoff
	failing := false
	var (
		last   Peer
		secret string
	)
	for {
		last = cfg.Peer()
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := rc.Announce(actx, &shoalv1.AnnounceRequest{Peer: peerToWire(last), Secret: secret})
		cancel()
		if status.Code(err) == codes.PermissionDenied && secret != "" {
			// The registry restarted and someone else took the id, or
			// it forgot us: start over as a new registration.
			secret = ""
		}
		if status.Code(err) == codes.Unauthenticated && cfg.Rejected != nil {
			cfg.Rejected(err)
			return
		}
		wait := every
		switch {
		case err == nil:
			if failing {
				cfg.Logger.Info("registry reachable again; announced")
			}
			failing, backoff = false, cfg.MinBackoff
			secret = resp.GetSecret()
			if l := time.Duration(resp.GetLeaseMs()) * time.Millisecond; l > 0 {
				every = l / 3
			}
			wait = every
			if cfg.Announced != nil {
				cfg.Announced()
			}
		case ctx.Err() != nil:
		default:
			if !failing {
				cfg.Logger.Warn("announce failed; retrying with backoff", "err", err)
			}
			failing = true
			wait = backoff + rand.N(backoff/2+1)
			backoff = min(2*backoff, cfg.MaxBackoff, max(every, cfg.MinBackoff))
		}
		var kick <-chan struct{}
		if cfg.Kick != nil {
			kick = cfg.Kick()
		}
		t := time.NewTimer(wait)
		select {
		case <-kick:
			t.Stop()
			continue
		case <-ctx.Done():
			t.Stop()
			if cfg.SkipLeave != nil && cfg.SkipLeave() {
				return
			}
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = rc.Leave(lctx, &shoalv1.LeaveRequest{PeerId: last.ID, Address: last.Addr, Secret: secret})
			cancel()
			return
		case <-t.C:
		}
	}
}

// registryLinkOptions are how connections to registries (a peer's
// announces, a joining registry's Members call) notice a lost link and come back once
// it heals. Pings every 6 s, answered within 2 s, close a connection whose
// packets vanish (a cut link resets nothing, and TCP's own retries space
// out to tens of seconds); new attempts come at most 2 s apart, not
// grpc-go's default of up to 120 s, each giving up after 5 s. A healed
// partition is then seen within seconds.
var registryLinkOptions = []grpc.DialOption{
	grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 6 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
	grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}),
}
