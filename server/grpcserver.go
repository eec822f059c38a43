package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/shoalnet/shoal/chunkstore"
	shoalv1 "github.com/shoalnet/shoal/gen/shoal/v1"
)

const (
	// MaxMessageBytes is the largest chunk message a shoal server sends
	// or a client accepts: one full chunk plus room for the envelope.
	MaxMessageBytes = chunkstore.MaxChunkSize + 64<<10
	// maxSendBytes is the largest message a server sends at all: the
	// manifest of a file of 1.9 TiB (1 MiB chunks, 34 bytes per hash).
	// Clients accept a manifest only as large as the size the registry
	// gave them implies (chunkstore.WireBytes).
	maxSendBytes = 64 << 20
	// maxRequestBytes is the largest request a server accepts. Requests
	// are small: an announce of many files is the biggest.
	maxRequestBytes = 4 << 20
)

// Config configures a gRPC server.
type Config struct {
	// Logger receives one line per finished call at debug level, one per
	// failed call at warn level, and recovered panics.
	Logger *slog.Logger
	// StopTimeout is how long Stop waits for calls to finish before it
	// cuts them. Default 1 s: Ctrl-C ends shoal within 2 s, and a download
	// cut here resumes from another peer.
	StopTimeout time.Duration
	// KeepaliveTime is how often an idle connection is pinged; a dead
	// client is dropped after one more KeepaliveTime without an answer.
	KeepaliveTime time.Duration
	// Limits bound what one client can make the server do.
	Limits Limits
	// Token, if set, is required on registry writes (Announce, Leave) as
	// "authorization: Bearer TOKEN". Registries gossip apart from it, with
	// their own key (GossipConfig.Key).
	Token string
	// Options are appended to the server's options (credentials, say).
	Options []grpc.ServerOption
}

// DefaultConfig returns the wiring used by `shoal serve`.
func DefaultConfig() Config {
	return Config{Logger: slog.Default(), StopTimeout: time.Second, KeepaliveTime: 30 * time.Second, Limits: DefaultLimits()}
}

// Server is a gRPC server carrying shoal's services, health and reflection.
type Server struct {
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	conns  *connTable // open connections, for cutting a stalled client
}

// New builds a server. peer and registry may be nil to leave that service
// out. Health reports NOT_SERVING until SetServing(true).
func New(cfg Config, peer shoalv1.PeerServiceServer, registry shoalv1.RegistryServiceServer) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultConfig().StopTimeout
	}
	if cfg.KeepaliveTime <= 0 {
		cfg.KeepaliveTime = DefaultConfig().KeepaliveTime
	}
	cfg.Limits = cfg.Limits.withDefaults()
	rejects := newCallLog()
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		if lvl >= logging.LevelWarn {
			ok, suppressed := rejects.allow(clientIP(ctx), time.Now())
			if !ok {
				return
			}
			if suppressed > 0 {
				fields = append(fields, "suppressed", suppressed)
			}
		}
		cfg.Logger.Log(ctx, slog.Level(lvl), msg, clipFields(fields)...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			switch c {
			case codes.OK, codes.Canceled, codes.NotFound:
				return logging.LevelDebug
			case codes.Internal, codes.Unknown, codes.DataLoss:
				return logging.LevelError
			default:
				return logging.LevelWarn
			}
		}),
	}
	recoveryOpts := []recovery.Option{recovery.WithRecoveryHandler(func(p any) error {
		cfg.Logger.Error("recovered from panic", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	bad := &malformed{}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(logging.UnaryServerInterceptor(logger, logOpts...), bad.unary, recovery.UnaryServerInterceptor(recoveryOpts...)),
		grpc.ChainStreamInterceptor(logging.StreamServerInterceptor(logger, logOpts...), bad.stream, recovery.StreamServerInterceptor(recoveryOpts...)),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.MaxSendMsgSize(maxSendBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTime}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.InitialWindowSize(windowBytes),
		grpc.InitialConnWindowSize(connWindowBytes),
		grpc.WriteBufferSize(256 << 10),
		grpc.ReadBufferSize(64 << 10),
		grpc.ForceServerCodecV2(newCodec(bad)),
	}
	opts = append(opts, limitOptions(cfg.Limits)...)
	opts = append(opts, tokenOptions(cfg.Token)...)
	opts = append(opts, cfg.Options...)
	s := &Server{cfg: cfg, grpc: grpc.NewServer(opts...), health: health.NewServer(), conns: newConnTable()}
	if ps, ok := peer.(*PeerService); ok {
		ps.cut = s.conns.cut
	}
	if peer != nil {
		shoalv1.RegisterPeerServiceServer(s.grpc, peer)
	}
	if registry != nil {
		shoalv1.RegisterRegistryServiceServer(s.grpc, registry)
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.SetServing(false)
	return s
}

// Flow-control windows. Fixed windows large enough for a full chunk in
// flight per stream let a fast loopback or LAN link run without waiting for
// window updates; they turn off grpc-go's BDP estimation.
const (
	windowBytes     = 4 << 20
	connWindowBytes = 16 << 20
)

// SetServing sets the health status of the server and of its services.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for name := range s.grpc.GetServiceInfo() {
		s.health.SetServingStatus(name, st)
	}
	s.health.SetServingStatus("", st)
}

// Serve accepts connections on lis until ctx ends, then stops gracefully:
// health turns NOT_SERVING, calls get StopTimeout to finish, the rest are
// cut.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(trackingListener{Listener: lis, table: s.conns}) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("serve %s: %w", lis.Addr(), err)
		}
		return nil // stopped by Kill
	case <-ctx.Done():
	}
	s.Stop()
	<-errc
	return nil
}

// Stop stops the server gracefully, with the StopTimeout fallback.
func (s *Server) Stop() {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	t := time.NewTimer(s.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.grpc.Stop()
		<-done
	}
}

// GRPC returns the underlying server, to register more services.
func (s *Server) GRPC() *grpc.Server { return s.grpc }
