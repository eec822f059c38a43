package server

import (
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// inboundStreams is how many of memberlist's inbound TCP streams (push-
// pulls and batches) a registry handles at once. memberlist reads a
// push-pull's whole table into memory before it hands it over, and starts
// a handler for every stream: when a partition heals, every member pushes
// its table to those coming back at once, and those buffers were most of a
// registry's peak memory (20 of 48 MB live, 20 registries and 10,000 peers).
// Merges run one at a time anyway (stateMu). A stream waiting here costs
// only its socket's buffers; its sender's deadline still runs, and one that
// expired is read to its end at once.
const inboundStreams = 2

// streamLimit is memberlist's UDP and TCP transport, handing memberlist at
// most a few inbound streams at a time: the next one when a handler closes
// its connection.
type streamLimit struct {
	*memberlist.NetTransport
	streams  chan net.Conn
	slots    chan struct{}
	deadline time.Duration // outboundDeadline; tests shorten it
	done     chan struct{} // closed by Shutdown
	drained  chan struct{} // closed once the listeners have stopped
	stop     sync.Once
	wg       sync.WaitGroup
}

// newStreamLimit listens on addr:port (port 0: a free one, the same for
// UDP and TCP, tried a few times as memberlist does) and starts passing on
// inbound streams, at most n handled at once.
func newStreamLimit(addr string, port, n int, logger *log.Logger) (*streamLimit, error) {
	cfg := &memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: logger}
	tries := 1
	if port == 0 {
		tries = 10 // a free TCP port may be taken for UDP
	}
	var (
		nt  *memberlist.NetTransport
		err error
	)
	for range tries {
		if nt, err = memberlist.NewNetTransport(cfg); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossip transport: %w", err)
	}
	t := &streamLimit{NetTransport: nt, streams: make(chan net.Conn), slots: make(chan struct{}, n), done: make(chan struct{}), drained: make(chan struct{}), deadline: outboundDeadline}
	t.wg.Go(t.forward)
	return t, nil
}

// outboundDeadline bounds every stream this registry opens. memberlist
// sets its own (TCPTimeout) on push-pulls and pings, which replaces this
// one; a batch (SendReliable) had none, and a member that accepted and
// never read held the send, and the batches waiting behind it, for good.
// A member that reads takes a 4 MiB batch well within it.
const outboundDeadline = 30 * time.Second

// DialAddressTimeout opens a stream to a member, with outboundDeadline set.
func (t *streamLimit) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(t.deadline))
	return c, nil
}

// DialTimeout opens a stream to an address, with outboundDeadline set.
func (t *streamLimit) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// StreamCh is where memberlist takes inbound streams from.
func (t *streamLimit) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops passing streams on and closes the listeners.
// It may be called more than once.
func (t *streamLimit) Shutdown() error {
	var err error
	t.stop.Do(func() {
		close(t.done)
		err = t.NetTransport.Shutdown() // forward drains what its listener still hands over
		close(t.drained)
		t.wg.Wait()
	})
	return err
}

// forward passes inbound streams on as slots free. It takes streams until
// the listeners have stopped (after Shutdown, only to close them):
// NetTransport's Shutdown waits for a listener that is handing one over.
func (t *streamLimit) forward() {
	in := t.NetTransport.StreamCh()
	for {
		var conn net.Conn
		select {
		case conn = <-in:
		case <-t.drained:
			return
		}
		select {
		case t.slots <- struct{}{}:
		case <-t.done:
			conn.Close()
			continue
		}
		c := &slotConn{Conn: conn, release: func() { <-t.slots }}
		select {
		case t.streams <- c:
		case <-t.done:
			c.Close()
		}
	}
}

// slotConn gives its slot back when it is closed (memberlist closes every
// inbound stream when its handler ends).
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
