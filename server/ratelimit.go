package server

import (
	"context"

	"golang.org/x/time/rate"
)

// Throttle is one peer's upload budget, shared by all of its streams: a
// token bucket of bytes. A nil Throttle does not limit.
type Throttle struct {
	lim *rate.Limiter
}

// throttleStep is the most bytes taken from the bucket at once, so that
// streams interleave finely and the bucket's burst stays small.
const throttleStep = 32 << 10

// NewThrottle limits uploads to bytesPerSec; 0 or less means no limit.
func NewThrottle(bytesPerSec int64) *Throttle {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := int(min(bytesPerSec, throttleStep))
	return &Throttle{lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst)}
}

// Wait blocks until n bytes may be sent or ctx ends.
func (t *Throttle) Wait(ctx context.Context, n int) error {
	if t == nil {
		return nil
	}
	for n > 0 {
		step := min(n, t.lim.Burst())
		if err := t.lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return nil
}
