package server

import (
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestInboundStreamsWaitForASlot: with two slots, a third inbound stream
// reaches memberlist only when a handler closes one of the first two.
func TestInboundStreamsWaitForASlot(t *testing.T) {
	tr, err := newStreamLimit("127.0.0.1", 0, 2, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(tr.GetAutoBindPort()))
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	next := func(d time.Duration) net.Conn {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case c := <-tr.StreamCh():
			return c
		case <-timer.C:
			return nil
		}
	}
	first, second := next(5*time.Second), next(5*time.Second)
	if first == nil || second == nil {
		t.Fatal("the first two streams were not handed over")
	}
	if c := next(300 * time.Millisecond); c != nil {
		t.Fatal("a third stream was handed over while two were being handled")
	}
	first.Close()
	first.Close() // a second close gives back nothing more
	third := next(5 * time.Second)
	if third == nil {
		t.Fatal("the third stream was not handed over after one closed")
	}
	defer third.Close()
	if len(tr.slots) != 2 {
		t.Fatalf("%d slots taken, want 2", len(tr.slots))
	}
	second.Close()
	if len(tr.slots) != 1 {
		t.Fatalf("%d slots taken after a close, want 1", len(tr.slots))
	}
}
