package server

import (
	"errors"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
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

// A stream this registry opens gives up on a member that accepts and never
// reads: a batch's send once waited for it for good.
func TestOutboundStreamsHaveADeadline(t *testing.T) {
	tr, err := newStreamLimit("127.0.0.1", 0, 2, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown()
	tr.deadline = 200 * time.Millisecond
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	wg.Go(func() { // accepts, never reads
		c, err := lis.Accept()
		if err == nil {
			<-stop
			c.Close()
		}
	})
	c, err := tr.DialAddressTimeout(memberlist.Address{Addr: lis.Addr().String()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if _, err := c.Write(buf); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the write ended with %v, want a deadline exceeded", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a write to a member that never reads did not give up")
	}
}
