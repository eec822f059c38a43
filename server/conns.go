package server

import (
	"net"
	"sync"
)

// connTable tracks a server's open connections by remote address, so that
// one whose client stopped reading can be cut whole: grpc-go has no way to
// end a single stream stuck in a send.
type connTable struct {
	mu    sync.Mutex
	conns map[string]net.Conn // by remote address; guarded by mu
}

func newConnTable() *connTable { return &connTable{conns: map[string]net.Conn{}} }

// cut closes the connection from addr, if it is still open.
func (t *connTable) cut(addr string) {
	t.mu.Lock()
	c := t.conns[addr]
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// trackingListener records the connections it accepts in a connTable.
type trackingListener struct {
	net.Listener
	table *connTable
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, table: l.table, addr: c.RemoteAddr().String()}
	l.table.mu.Lock()
	l.table.conns[tc.addr] = tc
	l.table.mu.Unlock()
	return tc, nil
}

// trackedConn leaves its table when closed.
type trackedConn struct {
	net.Conn
	table *connTable
	addr  string
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.table.mu.Lock()
		if c.table.conns[c.addr] == c {
			delete(c.table.conns, c.addr)
		}
		c.table.mu.Unlock()
	})
	return c.Conn.Close()
}
