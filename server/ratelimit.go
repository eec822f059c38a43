package server

import (
	"context"
	"time"

	"golang.org/x/time/rate"
)

// Throttle is one peer's upload budget, shared by all of its streams: a
// token bucket of bytes. A nil Throttle does not limit.
//
// The streams take turns, one whole Wait at a time (a chunk), instead of
// sharing the bucket 32 KiB by 32 KiB: a peer serving 16 requests then
// sends each chunk at its full rate, one after the other, rather than all
// 16 at a sixteenth of it. Its throughput is the same; each chunk lands
// 16 times sooner, and in a swarm a chunk can be passed on only once it
// has landed whole.
type Throttle struct {
	lim  *rate.Limiter
	turn chan struct{} // holds one token: the stream sending now
}

// throttleStep is the most bytes taken from the bucket at once.
const throttleStep = 32 << 10

// throttleSlack is how long the bucket fills while no sender waits on it:
// enough to cover a sender's timer waking up late on a busy machine. With
// a bucket of 32 KiB, which a cap of 20 MiB/s fills in 1.6 ms, a peer lost
// 7.5% of its cap to late wake-ups.
const throttleSlack = 50 * time.Millisecond

// NewThrottle limits uploads to bytesPerSec; 0 or less means no limit.
func NewThrottle(bytesPerSec int64) *Throttle {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := max(min(bytesPerSec, throttleStep), bytesPerSec*int64(throttleSlack)/int64(time.Second))
	t := &Throttle{lim: rate.NewLimiter(rate.Limit(bytesPerSec), int(burst)), turn: make(chan struct{}, 1)}
	t.turn <- struct{}{}
	return t
}

// Wait blocks until n bytes may be sent or ctx ends. Waits run one at a
// time, in the order they started.
func (t *Throttle) Wait(ctx context.Context, n int) error {
	if t == nil {
		return nil
	}
	select {
	case <-t.turn:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { t.turn <- struct{}{} }()
	for n > 0 {
		step := min(n, throttleStep)
		if err := t.lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}
