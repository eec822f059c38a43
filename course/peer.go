package course

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Peer is one TCP connection to one course peer port, with one request in
// flight at a time. It satisfies the client package's Source. It dials on
// first use, so a spare Peer costs no connection.
type Peer struct {
	id      string // "ip:port#k": the k-th connection to that port
	addr    netip.AddrPort
	observe func(netip.AddrPort, time.Duration) // told each block's time; may be nil
	early   func(netip.AddrPort, time.Duration) // told a block's time estimated from its first events; may be nil
	refused func(netip.AddrPort)                // told the port did not accept a connection; may be nil
	settle  func(context.Context) error         // waits before a dial until a reset reached the server; may be nil
	name    string                              // file name as requested, session prefix included
	size    int64
	timeout time.Duration // per block: connect, header and body

	mu   sync.Mutex
	conn net.Conn      // nil until dialled; guarded by mu
	r    *bufio.Reader // guarded by mu
}

// NewPeer prepares a connection to addr for file name of size bytes.
func NewPeer(addr netip.AddrPort, name string, size int64, timeout time.Duration) *Peer {
	return &Peer{id: addr.String(), addr: addr, name: name, size: size, timeout: timeout}
}

// ID names the connection: its address and its rank on that port.
func (p *Peer) ID() string { return p.id }

// Addr is the peer's address.
func (p *Peer) Addr() string { return p.addr.String() }

// Close closes the connection and waits (up to a second) until the server
// has closed its side, so that a connection opened next is not counted
// with this one: the server evicts at random past 5 per IP.
func (p *Peer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return nil
	}
	c := p.conn
	p.conn = nil
	if tc, ok := c.(*net.TCPConn); ok && tc.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, c)
	}
	return c.Close()
}

// Fetch requests the blocks one at a time and calls got for each. Any
// failure closes the connection: the reference server can interleave
// replies on a connection whose request was given up.
func (p *Peer) Fetch(ctx context.Context, blocks []int, got func(int, [][]byte) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		if p.settle != nil {
			if err := p.settle(ctx); err != nil {
				return err
			}
		}
		d := net.Dialer{Timeout: p.timeout}
		c, err := d.DialContext(ctx, "tcp", p.addr.String())
		if err != nil {
			if p.refused != nil && ctx.Err() == nil {
				p.refused(p.addr)
			}
			return fmt.Errorf("connect %s: %w", p.addr, err)
		}
		p.conn, p.r = c, bufio.NewReaderSize(c, 64<<10)
	}
	// Cancelling ctx cuts the block under way, but never one of a later
	// Fetch.
	defer cutOnCancel(ctx, p.conn).stop()
	buf := make([]byte, BlockSize)
	for _, n := range blocks {
		data, err := p.block(ctx, n, buf)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil {
			p.conn.Close()
			p.conn = nil
			return err
		}
		if err := got(n, [][]byte{data}); err != nil {
			return err
		}
	}
	return nil
}

// block asks for block n and reads its reply.
func (p *Peer) block(ctx context.Context, n int, buf []byte) ([]byte, error) {
	if n < 0 || n >= NumBlocks(p.size) {
		return nil, fmt.Errorf("block %d of %d: never asked", n, NumBlocks(p.size))
	}
	start := time.Now()
	SetDeadline(ctx, p.conn, start.Add(p.timeout))
	req := Request{Name: p.name, Kind: KindBlock, Block: n}
	if _, err := io.WriteString(p.conn, req.String()+"\n"); err != nil {
		return nil, err
	}
	h, err := ReadHeader(p.r)
	if err != nil {
		return nil, err
	}
	want := min(BlockSize, p.size-int64(n)*BlockSize)
	if h.Offset != int64(n)*BlockSize || h.Length != want {
		return nil, fmt.Errorf("%w: block %d answered with offset %d length %d", ErrSyntax, n, h.Offset, h.Length)
	}
	read := int64(0)
	if p.early != nil && want > 2*event {
		// The body comes in 1000-byte events d ms apart after the server's
		// wait: the gap between the first events tells the port's pace
		// long before the block ends.
		if _, err := io.ReadFull(p.r, buf[:event]); err != nil {
			return nil, err
		}
		first := time.Now()
		if _, err := io.ReadFull(p.r, buf[event:2*event]); err != nil {
			return nil, err
		}
		gap := time.Since(first)
		events := (want + event - 1) / event
		p.early(p.addr, first.Sub(start)+time.Duration(events-1)*gap)
		read = 2 * event
	}
	if _, err := io.ReadFull(p.r, buf[read:want]); err != nil {
		return nil, err
	}
	if p.observe != nil {
		p.observe(p.addr, time.Since(start))
	}
	return buf[:want], nil
}
