package etcdlock

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff spaces out the restarts of a loop whose engine call may fail or
// end at once (a watch on a closed client, a cancelled watch, a delete that
// keeps failing): from backoffMin doubling to backoffMax, with jitter.
type backoff struct{ next time.Duration }

const (
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
)

func (b *backoff) reset() { b.next = 0 }

// step returns the next backoff.
func (b *backoff) step() time.Duration {
	b.next = min(max(2*b.next, backoffMin), backoffMax)
	return b.next/2 + rand.N(b.next/2+1)
}

// wait sleeps for the next backoff, or until ctx ends (its error).
func (b *backoff) wait(ctx context.Context) error { return sleep(ctx, b.step()) }

// sleep waits d, or until ctx ends (its error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
