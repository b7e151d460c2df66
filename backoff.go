package dlock

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff yields capped, jittered exponential delays: each is between half
// and all of min(base·2ⁿ, max), so that clients that failed together do not
// retry together.
type backoff struct {
	base, max time.Duration
	n         int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 30 {
		d = min(b.base<<b.n, b.max)
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

// sleepCtx waits d; it returns false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
