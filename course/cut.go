package course

import (
	"context"
	"net"
	"sync"
	"time"
)

// cut makes a cancelled context interrupt reads and writes on a
// connection (by setting its deadline to now) until stop. A cancel never
// reaches the connection after stop, so it cannot cut a later request on
// a connection that is kept; set moves the cut to a connection that
// replaced the first.
type cut struct {
	ctx  context.Context
	halt func() bool

	mu   sync.Mutex
	conn net.Conn // nil once stopped; guarded by mu
}

func cutOnCancel(ctx context.Context, c net.Conn) *cut {
	k := &cut{ctx: ctx, conn: c}
	k.halt = context.AfterFunc(ctx, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.conn != nil {
			k.conn.SetDeadline(time.Now())
		}
	})
	return k
}

// set moves the cut to c; if ctx has already ended, c is cut at once.
func (k *cut) set(c net.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conn = c
	if k.ctx.Err() != nil {
		c.SetDeadline(time.Now())
	}
}

// stop ends the cut; the connection is left as it is.
func (k *cut) stop() {
	k.halt()
	k.mu.Lock()
	k.conn = nil
	k.mu.Unlock()
}

// SetDeadline sets c's deadline to t, or to now when ctx has ended: set
// after a cancel's cut (context.AfterFunc or cutOnCancel), a deadline
// would otherwise undo it and the wait would outlive the cancel.
func SetDeadline(ctx context.Context, c net.Conn, t time.Time) {
	c.SetDeadline(t)
	if ctx.Err() != nil {
		c.SetDeadline(time.Now())
	}
}

// SetReadDeadline is SetDeadline for reads only.
func SetReadDeadline(ctx context.Context, c net.Conn, t time.Time) {
	c.SetReadDeadline(t)
	if ctx.Err() != nil {
		c.SetDeadline(time.Now())
	}
}
