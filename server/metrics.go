package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
)

// Metrics is one process's Prometheus metrics: gRPC server metrics from
// go-grpc-middleware's provider, and shoal's own counters and gauges. The
// own metrics read counters the nodes keep anyway, so serving costs nothing
// extra per chunk.
type Metrics struct {
	reg  *prometheus.Registry
	grpc *grpcprom.ServerMetrics

	mu     sync.Mutex
	stats  []*Stats  // guarded by mu
	leases []*Leases // guarded by mu

	expired prometheus.Counter
	changed prometheus.Counter
}

// NewMetrics creates the metrics with Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg:  prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_registry_lease_expiries_total", Help: "Registrations dropped because their lease ran out.",
		}),
		changed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_store_files_changed_total", Help: "Files withdrawn because they changed on disk after hashing (chunks that would not verify).",
		}),
	}
	sum := func(f func(*Stats) int64) func() float64 {
		return func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			var n int64
			for _, s := range m.stats {
				n += f(s)
			}
			return float64(n)
		}
	}
	count := func(peers bool) func() float64 {
		return func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			var n int
			for _, l := range m.leases {
				p, f := l.Len()
				if peers {
					n += p
				} else {
					n += f
				}
			}
			return float64(n)
		}
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grpc, m.expired, m.changed,
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_bytes_served_total", Help: "Chunk bytes sent to peers."}, sum(func(s *Stats) int64 { return s.BytesServed.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_chunks_served_total", Help: "Whole chunks sent to peers."}, sum(func(s *Stats) int64 { return s.ChunksServed.Load() })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_registry_peers", Help: "Live registrations in this process's registries."}, count(true)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_registry_files", Help: "Distinct files held by live registrations."}, count(false)),
	)
	return m
}

// serverOptions add the gRPC metrics interceptors.
func (m *Metrics) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.grpc.StreamServerInterceptor()),
	}
}

// track adds a node's counters and registry to the totals.
func (m *Metrics) track(s *Stats, l *Leases) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats = append(m.stats, s)
	if l != nil {
		m.leases = append(m.leases, l)
		l.OnExpire(func(n int) { m.expired.Add(float64(n)) })
	}
}

// fileChanged counts a withdrawn file.
func (m *Metrics) fileChanged() { m.changed.Inc() }

// Handler serves the metrics in Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ServeMetrics serves /metrics on lis until ctx ends.
func ServeMetrics(ctx context.Context, lis net.Listener, m *Metrics) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
