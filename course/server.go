package course

import (
	"context"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/shoalnet/shoal/chunkstore"
)

// Mode sets the server's pacing, as the reference server's modes do.
type Mode int

// Modes.
const (
	// Testing: 1 s before each reply, then 1000 bytes every d ms, d = 160
	// on the fixed port and uniform in 0..199 on the others.
	Testing Mode = iota
	// Default: the same with d = 8 on the fixed port, 0..9 elsewhere.
	Default
	// Unlimited: no delays at all.
	Unlimited
)

// ParseMode reads testing, default or unlimited.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "testing":
		return Testing, nil
	case "default":
		return Default, nil
	case "unlimited":
		return Unlimited, nil
	}
	return 0, fmt.Errorf("mode %q: use testing, default or unlimited", s)
}

// ServerConfig configures a course-compatible server. Zero ports pick free
// ones (for tests); the reference uses 19876, 18765 and 20001.
type ServerConfig struct {
	// Dir is the folder served: its top-level files, by chunkstore's rule
	// (regular files only, never a dot-file, a symlink or a path outside
	// Dir). Ignored when Store is set.
	Dir string
	// Store, if set, is the store to serve from, already scanned and
	// followed by its owner (shoal serve shares its node's). Without it
	// the server opens one on Dir, scans it before serving and watches it.
	Store       *chunkstore.Store
	ListenIP    string  // default 127.0.0.1
	TrackerPort int     // UDP
	FixedPort   int     // the peer port that is always advertised
	Ports       int     // other peer ports, default 31
	GradingPort int     // TCP; negative turns grading off
	GradingFile string  // file of the grading challenge, default redsox.jpg
	Mode        Mode    // pacing
	TimeScale   float64 // every delay is multiplied by it; 0 means 1
	// MaxConnsPerIP is the connections one IP may hold over all peer
	// ports; a further one evicts a random existing one. Default 5.
	MaxConnsPerIP int
	// DropTrackerReplies drops this share (0..1) of tracker replies, as UDP
	// may; for tests.
	DropTrackerReplies float64
	// IdleTimeout closes a peer or grading connection that sends no
	// request line for this long. Default 2 min.
	IdleTimeout time.Duration
	// SessionTTL is how long a grading session lasts: its scrambled file
	// is served and its answer awaited that long. Default 10 min.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Server is a running course-compatible server.
type Server struct {
	cfg     ServerConfig
	store   *chunkstore.Store
	ownsStr bool // the store was opened here: scan, watch and close it
	ip      netip.Addr

	tracker *net.UDPConn
	grading net.Listener

	mu           sync.Mutex
	ports        map[uint16]*peerPort      // every listening peer port; guarded by mu
	advertised   []uint16                  // ports in tracker replies; guarded by mu
	conns        map[netip.Addr][]net.Conn // open peer connections per client IP; guarded by mu
	maxConns     int                       // most connections one IP held at once; guarded by mu
	evictions    int                       // guarded by mu
	lastChurn    time.Time                 // guarded by mu
	lastReply    map[netip.Addr]time.Time  // tracker rate limit; guarded by mu
	sessions     map[string]*session       // grading sessions by id, at most maxSessions; guarded by mu
	sessionOrder []sessionRef              // sessions oldest first, for expiry; guarded by mu
	lastWarn     time.Time                 // last rate-limited warning; guarded by mu
	started      bool                      // Run began: new ports are served at once; guarded by mu

	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

type peerPort struct {
	lis   net.Listener
	pause time.Duration // between 1000-byte events
}

// NewServer opens every listener.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.ListenIP == "" {
		cfg.ListenIP = "127.0.0.1"
	}
	if cfg.Ports == 0 {
		cfg.Ports = 31
	}
	if cfg.TimeScale <= 0 {
		cfg.TimeScale = 1
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = 5
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 10 * time.Minute
	}
	if cfg.GradingFile == "" {
		cfg.GradingFile = "redsox.jpg"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ip, err := netip.ParseAddr(cfg.ListenIP)
	if err != nil {
		return nil, fmt.Errorf("listen ip: %w", err)
	}
	st, owns := cfg.Store, false
	if st == nil {
		var err error
		if st, err = chunkstore.Open(chunkstore.Config{Dir: cfg.Dir, Logger: cfg.Logger}); err != nil {
			return nil, err
		}
		if err := st.Scan(context.Background()); err != nil {
			st.Close()
			return nil, err
		}
		owns = true
	}
	s := &Server{
		cfg: cfg, store: st, ownsStr: owns, ip: ip,
		ports: map[uint16]*peerPort{}, conns: map[netip.Addr][]net.Conn{},
		lastReply: map[netip.Addr]time.Time{}, sessions: map[string]*session{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Server, error) { s.Close(); return nil, err }
	s.tracker, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(cfg.TrackerPort))))
	if err != nil {
		return fail(fmt.Errorf("tracker: %w", err))
	}
	if _, err := s.openPort(cfg.FixedPort, true); err != nil {
		return fail(err)
	}
	for range cfg.Ports {
		if _, err := s.openPort(0, false); err != nil {
			return fail(err)
		}
	}
	if cfg.GradingPort >= 0 {
		s.grading, err = net.Listen("tcp", netip.AddrPortFrom(ip, uint16(cfg.GradingPort)).String())
		if err != nil {
			return fail(fmt.Errorf("grading: %w", err))
		}
	}
	return s, nil
}

// scaled multiplies a delay by the time scale.
func (s *Server) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.cfg.TimeScale)
}

// openPort listens on a new peer port and advertises it.
func (s *Server) openPort(port int, fixed bool) (uint16, error) {
	lis, err := net.Listen("tcp", netip.AddrPortFrom(s.ip, uint16(port)).String())
	if err != nil {
		return 0, fmt.Errorf("peer port: %w", err)
	}
	var pause time.Duration
	switch s.cfg.Mode {
	case Testing:
		pause = time.Duration(mrand.IntN(200)) * time.Millisecond
		if fixed {
			pause = 160 * time.Millisecond
		}
	case Default:
		pause = time.Duration(mrand.IntN(10)) * time.Millisecond
		if fixed {
			pause = 8 * time.Millisecond
		}
	}
	p := uint16(lis.Addr().(*net.TCPAddr).Port)
	s.mu.Lock()
	s.ports[p] = &peerPort{lis: lis, pause: s.scaled(pause)}
	s.advertised = append(s.advertised, p)
	started := s.started
	s.mu.Unlock()
	if started {
		s.wg.Go(func() { s.acceptLoop(p, lis) })
	}
	return p, nil
}

// TrackerAddr is the tracker's UDP address.
func (s *Server) TrackerAddr() netip.AddrPort { return s.tracker.LocalAddr().(*net.UDPAddr).AddrPort() }

// FixedAddr is the fixed peer port's address.
func (s *Server) FixedAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return netip.AddrPortFrom(s.ip, s.advertised[0])
}

// GradingAddr is the grading port's address.
func (s *Server) GradingAddr() netip.AddrPort {
	return s.grading.Addr().(*net.TCPAddr).AddrPort()
}

// Stats reports the most connections one IP held at once and how many
// connections were evicted.
func (s *Server) Stats() (maxConnsPerIP, evictions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConns, s.evictions
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	s.started = true
	ports := make(map[uint16]net.Listener, len(s.ports))
	for p, pp := range s.ports {
		ports[p] = pp.lis
	}
	s.mu.Unlock()
	for p, lis := range ports {
		s.wg.Go(func() { s.acceptLoop(p, lis) })
	}
	s.wg.Go(s.trackerLoop)
	if s.ownsStr {
		s.wg.Go(func() { s.store.Watch(s.ctx, 5*time.Second, nil) })
	}
	if s.grading != nil {
		s.wg.Go(s.gradingLoop)
	}
	select {
	case <-ctx.Done():
	case <-s.ctx.Done():
	}
	s.Close()
	return nil
}

// Close stops everything and waits for the handlers.
func (s *Server) Close() {
	s.cancel()
	if s.tracker != nil {
		s.tracker.Close()
	}
	if s.grading != nil {
		s.grading.Close()
	}
	s.mu.Lock()
	for _, pp := range s.ports {
		pp.lis.Close()
	}
	for _, cs := range s.conns {
		for _, c := range cs {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.ownsStr {
		s.store.Close()
	}
}

// fileSize is the size of a served file, or an error for names that are
// not a file the store serves directly in the folder.
func (s *Server) fileSize(name string) (int64, error) {
	if strings.ContainsAny(name, "/\\") {
		return 0, fmt.Errorf("%w: no file %q", ErrBadFormat, name)
	}
	m, err := s.store.ManifestByName(name)
	if err != nil {
		return 0, fmt.Errorf("%w: no file %q", ErrBadFormat, name)
	}
	return m.Size, nil
}

// readAt reads a served file's bytes, scrambled for a grading session.
func (s *Server) readAt(r Request, p []byte, off int64) error {
	f, err := s.store.OpenFile(r.Name)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(p, off); err != nil {
		return err
	}
	if r.Session != "" {
		ses := s.session(r.Session)
		if ses == nil {
			return fmt.Errorf("%w: no session %s", ErrBadFormat, r.Session)
		}
		for i := range p {
			p[i] ^= ses.key[(off+int64(i))%16]
		}
	}
	return nil
}

// validate parses one request line and checks it against what is served:
// torrent requests on the tracker, block and whole-file requests on peer
// ports; the file must be one the store serves and a session prefix one
// the grader opened. It returns the request and the file's size.
func (s *Server) validate(line string, tracker bool) (Request, int64, error) {
	req, err := ParseRequest(line)
	if err != nil {
		return req, 0, err
	}
	if (req.Kind == KindTorrent) != tracker {
		return req, 0, fmt.Errorf("%w: %s request on the wrong port", ErrBadFormat, line)
	}
	size, err := s.fileSize(req.Name)
	if err != nil {
		return req, 0, err
	}
	if req.Session != "" && s.session(req.Session) == nil {
		return req, 0, fmt.Errorf("%w: no session %s", ErrBadFormat, req.Session)
	}
	return req, size, nil
}
