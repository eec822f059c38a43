package server

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Limits bound what one client can make a server do. Going over any of them
// is RESOURCE_EXHAUSTED at once: nothing waits in an unbounded queue.
type Limits struct {
	// RequestsPerSecond is the rate of calls one client IP may start, in
	// calls per second, with a burst of the same size; health checks and
	// reflection are exempt. Default 1000; negative: no limit.
	RequestsPerSecond float64
	// StreamsPerConn is how many calls one connection may have open at
	// once. Default 64; negative: no limit.
	StreamsPerConn int
	// MaxClients caps the client IPs tracked by the request rate limit;
	// the least recently seen are forgotten first. Default 10,000.
	MaxClients int
}

// DefaultLimits returns the limits of `shoal serve` and `shoal registry`.
func DefaultLimits() Limits {
	return Limits{RequestsPerSecond: 1000, StreamsPerConn: 64, MaxClients: 10_000}
}

// withDefaults fills each zero field from DefaultLimits; negative fields
// stay, and turn their limit off.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.RequestsPerSecond == 0 {
		l.RequestsPerSecond = d.RequestsPerSecond
	}
	if l.StreamsPerConn == 0 {
		l.StreamsPerConn = d.StreamsPerConn
	}
	if l.MaxClients <= 0 {
		l.MaxClients = d.MaxClients
	}
	return l
}

// exempt reports whether a method is outside the limits: health checks and
// reflection, so that operators can always look.
func exempt(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

// clientIP is the caller's IP, without the port.
func clientIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// ipRate is a token bucket per client IP, for go-grpc-middleware's
// ratelimit interceptors.
type ipRate struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*ipBucket // guarded by mu
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPRate(rps float64, maxClients int) *ipRate {
	return &ipRate{limit: rate.Limit(rps), burst: max(1, int(rps)), max: max(1, maxClients), buckets: map[string]*ipBucket{}}
}

// Limit implements ratelimit.Limiter.
func (r *ipRate) Limit(ctx context.Context) error {
	if m, ok := grpc.Method(ctx); ok && exempt(m) {
		return nil
	}
	ip := clientIP(ctx)
	now := time.Now()
	r.mu.Lock()
	b := r.buckets[ip]
	if b == nil {
		if len(r.buckets) >= r.max {
			r.evictLocked()
		}
		b = &ipBucket{lim: rate.NewLimiter(r.limit, r.burst)}
		r.buckets[ip] = b
	}
	b.seen = now
	ok := b.lim.AllowN(now, 1)
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("over %v requests per second from %s", float64(r.limit), ip)
	}
	return nil
}

// evictLocked forgets the least recently seen half of the clients.
func (r *ipRate) evictLocked() {
	times := make([]time.Time, 0, len(r.buckets))
	for _, b := range r.buckets {
		times = append(times, b.seen)
	}
	slices.SortFunc(times, time.Time.Compare)
	cutoff := times[len(times)/2]
	for ip, b := range r.buckets {
		if !b.seen.After(cutoff) {
			delete(r.buckets, ip)
		}
	}
}

// connStreams counts open calls per connection.
type connStreams struct {
	max int

	mu   sync.Mutex
	open map[net.Addr]int // by the connection's remote address; guarded by mu
}

func (c *connStreams) acquire(ctx context.Context, method string) (release func(), err error) {
	if exempt(method) {
		return func() {}, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return func() {}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[p.Addr] >= c.max {
		return nil, status.Errorf(codes.ResourceExhausted, "over %d open calls on one connection", c.max)
	}
	c.open[p.Addr]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.open[p.Addr]--; c.open[p.Addr] <= 0 {
			delete(c.open, p.Addr)
		}
	}, nil
}

// limitOptions builds the interceptors enforcing l.
func limitOptions(l Limits) []grpc.ServerOption {
	var opts []grpc.ServerOption
	if l.RequestsPerSecond > 0 {
		lim := newIPRate(l.RequestsPerSecond, l.MaxClients)
		opts = append(opts,
			grpc.ChainUnaryInterceptor(ratelimit.UnaryServerInterceptor(lim)),
			grpc.ChainStreamInterceptor(ratelimit.StreamServerInterceptor(lim)))
	}
	if l.StreamsPerConn > 0 {
		cs := &connStreams{max: l.StreamsPerConn, open: map[net.Addr]int{}}
		opts = append(opts,
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				release, err := cs.acquire(ctx, info.FullMethod)
				if err != nil {
					return nil, err
				}
				defer release()
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				release, err := cs.acquire(ss.Context(), info.FullMethod)
				if err != nil {
					return err
				}
				defer release()
				return h(srv, ss)
			}),
			// A hard cap well above ours, so a client that ignores our
			// answers still cannot open streams without bound.
			grpc.MaxConcurrentStreams(uint32(4*l.StreamsPerConn)))
	}
	return opts
}
