package course

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
)

func TestCutOnCancel(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	k := cutOnCancel(ctx, a)
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after cancel: %v, want a deadline error", err)
	}
	// A connection set after the cancel is cut at once.
	c, d := net.Pipe()
	defer c.Close()
	defer d.Close()
	k.set(c)
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on a connection set after the cancel: %v", err)
	}
	k.stop()

	// After stop, a cancel leaves the connection alone.
	e, f := net.Pipe()
	defer e.Close()
	defer f.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	cutOnCancel(ctx2, e).stop()
	cancel2()
	go f.Write([]byte{1})
	if _, err := e.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read after stop and cancel: %v", err)
	}
}
