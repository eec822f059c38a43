package course

import (
	"errors"
	mrand "math/rand/v2"
	"net"
	"time"
)

// acceptLoop admits the connections of one peer port.
func (s *Server) acceptLoop(port uint16, lis net.Listener) {
	var backoff time.Duration
	for {
		c, err := lis.Accept()
		if err != nil {
			if s.keepAccepting(err, &backoff) {
				continue
			}
			return
		}
		backoff = 0
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

// keepAccepting decides after an Accept error: false when the listener is
// closed or the server stops; otherwise (out of file descriptors, say) it
// waits, from 5 ms doubling to 1 s as net/http does, and says to go on.
func (s *Server) keepAccepting(err error, backoff *time.Duration) bool {
	if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
		return false
	}
	*backoff = min(max(2**backoff, 5*time.Millisecond), time.Second)
	s.logLimited("accept failed; retrying", "err", err, "retry_in", *backoff)
	return s.sleep(*backoff)
}

// logLimited logs at warn level at most once a second.
func (s *Server) logLimited(msg string, args ...any) {
	s.mu.Lock()
	now := time.Now()
	quiet := now.Sub(s.lastWarn) < time.Second
	if !quiet {
		s.lastWarn = now
	}
	s.mu.Unlock()
	if !quiet {
		s.cfg.Logger.Warn(msg, args...)
	}
}
