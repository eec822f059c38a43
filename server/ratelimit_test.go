package server

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// A peer serving two requests sends one chunk whole before the other's
// first byte: a later small Wait ends after an earlier large one.
func TestThrottleSendsOneChunkAtATime(t *testing.T) {
	th := NewThrottle(8 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan string, 2)
	go func() {
		if err := th.Wait(ctx, 1<<20); err != nil {
			t.Error(err)
		}
		done <- "chunk"
	}()
	for len(th.turn) > 0 { // until the chunk's Wait holds the turn
		if ctx.Err() != nil {
			t.Fatal("the first Wait never took its turn")
		}
		runtime.Gosched()
	}
	go func() {
		if err := th.Wait(ctx, throttleStep); err != nil {
			t.Error(err)
		}
		done <- "piece"
	}()
	if first := <-done; first != "chunk" {
		t.Fatalf("%s ended first: a 32 KiB wait overtook a 1 MiB chunk under way", first)
	}
	<-done
}

// A sender that wakes up late loses nothing: the bucket keeps
// throttleSlack of the rate, not one 32 KiB step (1.6 ms at 20 MiB/s).
func TestThrottleBucketCoversLateWakeups(t *testing.T) {
	const rate = 20 << 20
	th := NewThrottle(rate)
	t0 := time.Now()
	if !th.lim.AllowN(t0, th.lim.Burst()) {
		t.Fatal("a new bucket is not full")
	}
	late := 30 * time.Millisecond
	want := 0.99 * rate * late.Seconds()
	if got := th.lim.TokensAt(t0.Add(late)); got < want {
		t.Fatalf("%.0f bytes may go after a %v wake-up delay, want %.0f", got, late, want)
	}
}

func TestThrottleWaitEndsWithItsContext(t *testing.T) {
	th := NewThrottle(1 << 20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	<-th.turn // another stream's chunk, never finished
	waitCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- th.Wait(waitCtx, 1) }()
	stop()
	if err := <-errc; err == nil {
		t.Fatal("a Wait queued behind another returned nil after its context ended")
	}
}
