package course

import (
	"bufio"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strings"
	"time"
)

// serveConn answers requests on one peer connection until the client
// closes it, sends a bad request, or the server stops.
func (s *Server) serveConn(c net.Conn, pause time.Duration) {
	defer c.Close()
	defer s.forget(c) // before the close, so a client that saw it is not over its limit
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	w := timedConn{c, s.cfg.IdleTimeout}
	r := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		line, err := readLine(r)
		if err != nil {
			return // EOF, idle too long, or a line over 1024 bytes: close
		}
		c.SetReadDeadline(time.Time{})
		if strings.TrimSpace(line) == "" {
			continue
		}
		req, size, err := s.validate(line, false)
		if err != nil {
			fmt.Fprintf(w, "400 BAD_FORMAT: <%s>\n", strings.TrimSpace(line))
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
		if err := s.send(w, req, h, pause); err != nil {
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

// timedConn gives every write a deadline: a client that stops reading is
// cut after the deadline instead of holding its handler for ever.
type timedConn struct {
	net.Conn
	timeout time.Duration
}

func (c timedConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}
