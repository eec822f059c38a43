package course

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Stream reads a file as one whole-file request ("GET name") on one TCP
// connection, from the file's start to as far as it is asked. It satisfies
// the client package's SequentialSource: the scheduler hands it the first
// pending block after its position, and the block connections work from
// the file's end.
//
// # NOTES
//
// Why a stream: the reference server waits 1 s after every request and
// then sends 1000 bytes per event, d ms apart (d fixed per port, 0 to
// 199 ms). A block request costs 1 s + 10·d per 10000 bytes; the whole
// file costs the 1 s once, then d per 1000 bytes: 2.5x the throughput of
// block requests on a port with d = 66 ms, 10x with d = 10 ms. Only one
// stream is useful (every whole-file reply starts at byte 0), so one
// connection of the five carries it.
//
// Moving the stream: a new whole-file request starts again at byte 0, so
// before each block the stream asks its Tracker whether a measured port
// would reach the stream's share of what is left sooner, counting the
// bytes it must read again; if so it closes (reset, then a wait of one
// pause of the old port, so the server has dropped the connection before
// the next one counts) and reopens on that port.
type Stream struct {
	t       *Tracker
	id      string
	name    string
	size    int64
	timeout time.Duration // per block: connect, header and body
	onClose func()        // tells the tracker the stream slot is free

	addr atomic.Pointer[string] // port last opened on, for Addr; read without mu
	next atomic.Int64           // first block it can still deliver; read without mu
	left atomic.Int64           // blocks not yet written by anyone, as the scheduler last said

	mu     sync.Mutex
	conn   net.Conn       // nil until dialled; guarded by mu
	r      *bufio.Reader  // guarded by mu
	port   netip.AddrPort // where conn goes; guarded by mu
	pos    int64          // body bytes read on conn; guarded by mu
	first  time.Time      // when the first 1000-byte event arrived; guarded by mu
	events int            // events read since first; guarded by mu
	pace   time.Duration  // measured pause between events; guarded by mu
	closed bool           // guarded by mu
}

// ID names the stream.
func (s *Stream) ID() string { return s.id }

// Addr is the port the stream last opened on, or its ID before that. It
// does not wait for a Fetch under way (the client names the source from
// inside Fetch's callback).
func (s *Stream) Addr() string {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return s.id
}

// Next is the first block the stream can still deliver.
func (s *Stream) Next() int { return int(s.next.Load()) }

// Left records how many blocks are not yet written by anyone.
func (s *Stream) Left(blocks int) { s.left.Store(int64(blocks)) }

// Close resets the connection. The server notices a reset at its next
// write, one pause of the port later, so the tracker holds the next
// connection of this download back until then (at most maxLinger): a
// download that is over opens none and does not wait.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.dropLocked()
	if !s.closed {
		s.closed = true
		if s.onClose != nil {
			s.onClose()
		}
	}
	return err
}

// maxLinger bounds the wait for a reset to reach the server: the
// reference's longest pause is 199 ms.
const maxLinger = 300 * time.Millisecond

func (s *Stream) dropLocked() error {
	if s.conn == nil {
		return nil
	}
	c := s.conn
	s.conn, s.r, s.pos = nil, nil, 0
	s.next.Store(0)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	err := c.Close()
	s.t.holdDials(min(s.pace+50*time.Millisecond, maxLinger))
	return err
}

// errBehind means a block before the stream's position was asked for.
var errBehind = errors.New("block already passed")

// Fetch reads forward to each block in turn and calls got with it. A
// failure or a cancelled ctx closes the connection.
func (s *Stream) Fetch(ctx context.Context, blocks []int, got func(int, [][]byte) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf := make([]byte, BlockSize)
	for _, n := range blocks {
		if n < 0 || n >= NumBlocks(s.size) {
			return fmt.Errorf("block %d of %d: never asked", n, NumBlocks(s.size))
		}
		if s.conn == nil {
			if err := s.openLocked(ctx); err != nil {
				return err
			}
		}
		off := int64(n) * BlockSize
		if off < s.pos {
			return fmt.Errorf("%w: block %d, stream at byte %d", errBehind, n, s.pos)
		}
		data, err := s.readLocked(ctx, off, buf)
		if err != nil {
			s.dropLocked()
			return fmt.Errorf("stream from %s: %w", s.port, err)
		}
		if err := got(n, [][]byte{data}); err != nil {
			return err
		}
	}
	return nil
}

// openLocked dials the port the tracker thinks fastest (or the one a move
// chose) and asks for the whole file.
func (s *Stream) openLocked(ctx context.Context) error {
	if !s.port.IsValid() {
		p, ok := s.t.streamPort()
		if !ok {
			return fmt.Errorf("stream: %w", ErrNoPorts)
		}
		s.port = p
	}
	shown := s.port.String()
	s.addr.Store(&shown)
	if err := s.t.waitDials(ctx); err != nil {
		return err
	}
	d := net.Dialer{Timeout: s.timeout}
	c, err := d.DialContext(ctx, "tcp", s.port.String())
	if err != nil {
		if ctx.Err() == nil {
			s.t.refused(s.port)
		}
		bad := s.port
		s.port = netip.AddrPort{} // the next attempt asks the tracker again
		return fmt.Errorf("connect %s: %w", bad, err)
	}
	s.conn, s.r, s.pos, s.events, s.first = c, bufio.NewReaderSize(c, 64<<10), 0, 0, time.Time{}
	s.next.Store(0)
	// A cancel cuts the header read.
	defer cutOnCancel(ctx, c).stop()
	SetDeadline(ctx, c, time.Now().Add(s.timeout))
	fail := func(err error) error {
		s.dropLocked()
		return fmt.Errorf("stream from %s: %w", s.port, err)
	}
	if _, err := io.WriteString(c, Request{Name: s.name, Kind: KindWhole}.String()+"\n"); err != nil {
		return fail(err)
	}
	h, err := ReadHeader(s.r)
	if err != nil {
		return fail(err)
	}
	if h.Offset != 0 || h.Length != s.size {
		return fail(fmt.Errorf("%w: whole file answered with offset %d length %d, want 0 and %d", ErrSyntax, h.Offset, h.Length, s.size))
	}
	return nil
}

// readLocked reads the body up to off, discarding it, then the block at
// off into buf, one 1000-byte event at a time so it measures the port's
// pace as it goes.
func (s *Stream) readLocked(ctx context.Context, off int64, buf []byte) ([]byte, error) {
	cut := cutOnCancel(ctx, s.conn)
	defer cut.stop()
	SetDeadline(ctx, s.conn, time.Now().Add(s.timeout))
	want := min(BlockSize, s.size-off)
	end := off + want
	for s.pos < end {
		n := min(event-s.pos%event, end-s.pos)
		var dst []byte
		if s.pos >= off {
			dst = buf[s.pos-off : s.pos-off+n]
		} else {
			n = min(n, off-s.pos)
			dst = buf[:n]
		}
		if _, err := io.ReadFull(s.r, dst); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, err
		}
		s.pos += n
		if s.pos%event != 0 && s.pos != s.size {
			continue
		}
		s.eventLocked()
		to, ok := s.t.streamMove(s.port, s.pace, s.pos, s.left.Load()*BlockSize)
		if !ok {
			continue
		}
		s.dropLocked()
		s.port = to
		if err := s.openLocked(ctx); err != nil {
			return nil, err
		}
		cut.set(s.conn)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	s.next.Store((s.pos + BlockSize - 1) / BlockSize)
	s.t.observeStream(s.port, s.pace)
	return buf[:want], nil
}

// eventLocked counts one 1000-byte event; from the second on, the pace is
// the mean gap since the first.
func (s *Stream) eventLocked() {
	now := time.Now()
	if s.events == 0 {
		s.first = now
	}
	s.events++
	if s.events >= 2 {
		s.pace = now.Sub(s.first) / time.Duration(s.events-1)
		if s.events == 2 {
			s.t.observeStream(s.port, s.pace)
		}
	}
}
