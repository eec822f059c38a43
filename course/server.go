package course

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
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
	Logger             *slog.Logger
}

// Server is a running course-compatible server.
type Server struct {
	cfg     ServerConfig
	store   *chunkstore.Store
	ownsStr bool // the store was opened here: scan, watch and close it
	ip      netip.Addr

	tracker *net.UDPConn
	grading net.Listener

	mu         sync.Mutex
	ports      map[uint16]*peerPort      // every listening peer port; guarded by mu
	advertised []uint16                  // ports in tracker replies; guarded by mu
	conns      map[netip.Addr][]net.Conn // open peer connections per client IP; guarded by mu
	maxConns   int                       // most connections one IP held at once; guarded by mu
	evictions  int                       // guarded by mu
	lastChurn  time.Time                 // guarded by mu
	lastReply  map[netip.Addr]time.Time  // tracker rate limit; guarded by mu
	sessions   map[string]*session       // grading sessions by id; guarded by mu
	started    bool                      // Run began: new ports are served at once; guarded by mu

	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

type peerPort struct {
	lis   net.Listener
	pause time.Duration // between 1000-byte events
}

type session struct {
	key   [16]byte
	start time.Time
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
		s.mu.Lock()
		ses := s.sessions[r.Session]
		s.mu.Unlock()
		if ses == nil {
			return fmt.Errorf("%w: no session %s", ErrBadFormat, r.Session)
		}
		for i := range p {
			p[i] ^= ses.key[(off+int64(i))%16]
		}
	}
	return nil
}

func (s *Server) trackerLoop() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.tracker.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		ip := from.Addr().Unmap()
		req, perr := ParseRequest(strings.TrimRight(string(buf[:n]), "\r\n"))
		var size int64
		if perr == nil && req.Kind == KindTorrent {
			size, perr = s.fileSize(req.Name)
			if perr == nil && req.Session != "" {
				s.mu.Lock()
				if s.sessions[req.Session] == nil {
					perr = ErrBadFormat
				}
				s.mu.Unlock()
			}
		} else if perr == nil {
			perr = ErrBadFormat
		}
		if perr != nil {
			s.tracker.WriteToUDPAddrPort([]byte("400 BAD_FORMAT\n"), from)
			continue
		}
		now := time.Now()
		s.mu.Lock()
		last, seen := s.lastReply[ip]
		limited := seen && now.Sub(last) <= s.scaled(2000*time.Millisecond)
		var peers []netip.AddrPort
		if !limited {
			for _, k := range mrand.Perm(len(s.advertised))[:min(2, len(s.advertised))] {
				peers = append(peers, netip.AddrPortFrom(s.ip, s.advertised[k]))
			}
			s.lastReply[ip] = now
			if len(s.lastReply) > 10_000 {
				clear(s.lastReply)
			}
		}
		s.mu.Unlock()
		if limited || mrand.Float64() < s.cfg.DropTrackerReplies {
			continue // silently, as the reference does (and as UDP may)
		}
		reply := TrackerReply{NumBlocks: NumBlocks(size), Size: size, Peers: peers}
		s.tracker.WriteToUDPAddrPort(reply.Format(), from)
	}
}

func (s *Server) acceptLoop(port uint16, lis net.Listener) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		s.admit(c)
		s.maybeChurn(port)
		s.mu.Lock()
		pause := s.ports[port].pause
		s.mu.Unlock()
		s.wg.Go(func() { s.serveConn(c, pause) })
	}
}

// admit records a connection, evicting a random one of the same IP when
// the IP is over its limit.
func (s *Server) admit(c net.Conn) {
	ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.conns[ip]
	if len(cs) >= s.cfg.MaxConnsPerIP {
		k := mrand.IntN(len(cs))
		cs[k].Close()
		cs = append(cs[:k], cs[k+1:]...)
		s.evictions++
	}
	s.conns[ip] = append(cs, c)
	s.maxConns = max(s.maxConns, len(s.conns[ip]))
}

func (s *Server) forget(c net.Conn) {
	ip := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.conns[ip]
	for k, o := range cs {
		if o == c {
			s.conns[ip] = append(cs[:k], cs[k+1:]...)
			break
		}
	}
	if len(s.conns[ip]) == 0 {
		delete(s.conns, ip)
	}
}

// maybeChurn, at most once every 30 s (scaled), opens a new port and
// withdraws a random advertised one (never the fixed port), which stops
// accepting 30 to 60 s (scaled) later.
func (s *Server) maybeChurn(port uint16) {
	if s.cfg.Mode == Unlimited {
		return
	}
	s.mu.Lock()
	now := time.Now()
	if s.lastChurn.IsZero() {
		s.lastChurn = now
	}
	if now.Sub(s.lastChurn) < s.scaled(30*time.Second) || len(s.advertised) < 3 {
		s.mu.Unlock()
		return
	}
	s.lastChurn = now
	k := 1 + mrand.IntN(len(s.advertised)-1)
	gone := s.advertised[k]
	s.advertised = append(s.advertised[:k], s.advertised[k+1:]...)
	lis := s.ports[gone].lis
	s.mu.Unlock()
	if _, err := s.openPort(0, false); err != nil {
		s.cfg.Logger.Warn("churn: open port", "err", err)
	}
	delay := s.scaled(30*time.Second + time.Duration(mrand.IntN(30_000))*time.Millisecond)
	s.wg.Go(func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		lis.Close()
	})
}

// serveConn answers requests on one peer connection until the client
// closes it, sends a bad request, or the server stops.
func (s *Server) serveConn(c net.Conn, pause time.Duration) {
	defer c.Close()
	defer s.forget(c) // before the close, so a client that saw it is not over its limit
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	for {
		line, err := readLine(r)
		if err != nil {
			return // EOF, or a line over 1024 bytes: close
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		req, err := ParseRequest(line)
		var size int64
		if err == nil && req.Kind == KindTorrent {
			err = ErrBadFormat
		}
		if err == nil {
			size, err = s.fileSize(req.Name)
		}
		if err == nil && req.Session != "" {
			s.mu.Lock()
			if s.sessions[req.Session] == nil {
				err = ErrBadFormat
			}
			s.mu.Unlock()
		}
		if err != nil {
			fmt.Fprintf(c, "400 BAD_FORMAT: <%s>\n", strings.TrimSpace(line))
			return
		}
		if s.cfg.Mode != Unlimited && !s.sleep(s.scaled(time.Second)) {
			return
		}
		var h Header
		switch req.Kind {
		case KindWhole:
			h = Header{Offset: 0, Length: size}
		case KindAny, KindBlock:
			n := req.Block
			if req.Kind == KindAny {
				n = mrand.IntN(max(1, NumBlocks(size)))
			}
			if n >= NumBlocks(size) {
				s.sleep(s.scaled(time.Second))
				return // out of range: nothing, then close
			}
			off := int64(n) * BlockSize
			h = Header{Offset: off, Length: min(BlockSize, size-off)}
		}
		if err := s.send(c, req, h, pause); err != nil {
			return
		}
	}
}

// send writes a header (split at a random point, as the reference does)
// and, unless only the header was asked, the body paced in 1000-byte
// events.
func (s *Server) send(c net.Conn, req Request, h Header, pause time.Duration) error {
	hdr := FormatHeader(h)
	cut := 1 + mrand.IntN(len(hdr)-1)
	if _, err := c.Write(hdr[:cut]); err != nil {
		return err
	}
	rest := hdr[cut:]
	if req.HeaderOnly {
		_, err := c.Write(rest)
		return err
	}
	const event = 1000
	buf := make([]byte, min(h.Length, 64<<10))
	for off := int64(0); off < h.Length; {
		n := min(int64(len(buf)), h.Length-off)
		if err := s.readAt(req, buf[:n], h.Offset+off); err != nil {
			return err
		}
		for k := int64(0); k < n; {
			step := n - k
			if pause > 0 || s.cfg.Mode != Unlimited {
				step = min(step, event)
			}
			out := buf[k : k+step]
			if rest != nil {
				out = append(append([]byte(nil), rest...), out...)
				rest = nil
			}
			if _, err := c.Write(out); err != nil {
				return err
			}
			k += step
			if pause > 0 && off+k < h.Length && !s.sleep(pause) {
				return context.Canceled
			}
		}
		off += n
	}
	if rest != nil {
		_, err := c.Write(rest)
		return err
	}
	return nil
}

// sleep waits d or until the server stops; false means stopped.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return s.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *Server) gradingLoop() {
	for {
		c, err := s.grading.Accept()
		if err != nil {
			return
		}
		s.wg.Go(func() { s.grade(c) })
	}
}

// grade runs the IAM challenge on one connection.
func (s *Server) grade(c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	var id string
	for {
		line, err := readLine(r)
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.EqualFold(verb, "IAM") && isDigits(arg) && len(arg) <= 18 {
			id = arg
			break
		}
		fmt.Fprintf(c, "400 BAD_FORMAT: <%s>\n", strings.TrimSpace(line))
		return
	}
	if _, err := s.fileSize(s.cfg.GradingFile); err != nil {
		fmt.Fprintf(c, "%s : no challenge file on this server\n", id)
		return
	}
	ses := &session{start: time.Now()}
	rand.Read(ses.key[:])
	s.mu.Lock()
	s.sessions[id] = ses
	s.mu.Unlock()
	fmt.Fprintf(c, "%s_%s : What is the 4-byte XOR checksum, i.e., the sequential XOR of all 4-byte words, of the file with this name? Your testing time starts NOW!\n", id, s.cfg.GradingFile)
	answer := make([]byte, 5)
	if _, err := io.ReadFull(r, answer); err != nil || answer[4] != '\n' {
		return
	}
	want, err := s.checksum(Request{Session: id, Name: s.cfg.GradingFile})
	if err != nil {
		return
	}
	secs := time.Since(ses.start).Seconds()
	if [4]byte(answer[:4]) == want {
		fmt.Fprintf(c, "%s : Success! You have answered the challenge correctly in  %.3f seconds.\n", id, secs)
	} else {
		fmt.Fprintf(c, "%s : Failure! The checksum %x is wrong.\n", id, answer[:4])
	}
}

// checksum is the 4-byte XOR of a served file.
func (s *Server) checksum(r Request) ([4]byte, error) {
	size, err := s.fileSize(r.Name)
	if err != nil {
		return [4]byte{}, err
	}
	buf := make([]byte, size)
	if err := s.readAt(r, buf, 0); err != nil {
		return [4]byte{}, err
	}
	return Checksum(buf), nil
}

// Checksum is the sequential XOR of a file's 4-byte words: byte j is the
// XOR of every byte at an offset ≡ j (mod 4), trailing bytes included.
func Checksum(data []byte) [4]byte {
	var c [4]byte
	for i, b := range data {
		c[i%4] ^= b
	}
	return c
}
