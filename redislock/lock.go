package redislock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dlockio/dlock/driver"
)

// lock is one acquisition: granted, or still being tried by Acquire.
type lock struct {
	d     *Driver
	keys  keys
	owner string // the acquisition's id; a waiter's id in queues and wake-ups
	// value is what the lock key holds while this acquisition owns it: the
	// owner id on a single node; with Redlock the owner id and the number
	// of the attempt that won (owner.N), so that giving back a failed
	// attempt can never delete a later attempt's key.
	value string
	ttl   time.Duration
	token uint64
	// ticket is a Redlock waiter's place in the nodes' queues: the time it
	// began to wait, the same on every node.
	ticket int64
	tries  int // Redlock attempts made
	// sent is when the last single-node attempt was sent: a grant by a
	// release came after it, so the granted TTL runs from no earlier.
	sent time.Time
	// waited: Acquire queued for this lock on a single node, so a release
	// may have granted it by a message that can still arrive.
	waited bool
}

// attempt is the outcome of one try.
type attempt struct {
	granted  bool
	validity driver.Validity
	wait     time.Duration // held: try again after this, or on a release
	pause    time.Duration // Redlock split vote: try again after this, ignoring releases
	err      error
	// floor (single node, held): the fence counter when the attempt ran.
	// A grant announced with a token no larger was made before the
	// attempt, which found the lock with someone else: it is stale.
	floor uint64
}

func (l *lock) Token() uint64 { return l.token }

// Lost returns nil: Redis does not tell a holder that its key went away;
// renewal and the portable layer's deadline do.
func (l *lock) Lost() <-chan struct{} { return nil }

// attempt tries once; queued says the caller is subscribed and should be
// queued for a wake-up if the lock is held.
func (l *lock) attempt(ctx context.Context, queued bool) attempt {
	if len(l.d.nodes) > 1 {
		return l.redlock(ctx, queued)
	}
	n := l.d.nodes[0]
	since := time.Now()
	l.sent = since
	q := ""
	if queued {
		q = "1"
	}
	v, err := n.run(ctx, acquireScript, []string{l.keys.lock, l.keys.fence, l.keys.queue, l.keys.gone},
		l.owner, ttlMillis(l.ttl), q).Int64Slice()
	if err == nil && (len(v) < 2 || v[0] == 0 && len(v) != 3) {
		err = fmt.Errorf("unexpected reply %v", v)
	}
	if err != nil {
		if !isServerError(err) {
			// The script may have run and its reply been lost, or it may
			// still be on its way: give back what may be ours, and have
			// the server refuse a late copy, rather than leave the lock to
			// nobody until its TTL runs out.
			l.d.background(func() { l.giveBack(true) })
		}
		return attempt{err: n.errorf(l.keys.lock, err)}
	}
	if v[0] == 1 {
		l.token = uint64(v[1])
		return attempt{granted: true, validity: driver.Validity{Since: since, TTL: l.ttl}}
	}
	// PTTL counts whole milliseconds, rounded down: add one so that the
	// retry comes after the key is gone, not just before.
	return attempt{wait: time.Duration(v[1]+1) * time.Millisecond, floor: uint64(v[2])}
}

// giveBack releases a single-node lock this acquisition may hold but will
// not use (a grant to a waiter that gave up, an attempt whose reply was
// lost), passing it on to the next waiter. With late set, later copies of
// this owner's attempts are refused.
func (l *lock) giveBack(late bool) {
	ctx, cancel := context.WithTimeout(context.Background(), giveBackTimeout)
	defer cancel()
	n := l.d.nodes[0]
	refuse := int64(0)
	if late {
		refuse = goneMillis(l.ttl)
	}
	_ = n.run(ctx, releaseScript, []string{l.keys.lock, l.keys.queue, l.keys.fence, l.keys.gone},
		l.owner, l.keys.channel, ttlMillis(l.ttl), refuse).Err()
}

// giveBackTimeout bounds a give-back made in the background.
const giveBackTimeout = 2 * time.Second

// goneMillis is how long a given-up attempt is refused: a request that
// reaches the server later than this can still take the lock, for one TTL.
func goneMillis(ttl time.Duration) int64 { return max(2*ttlMillis(ttl), 30_000) }

// granted takes over a lock that a release handed to this waiter. The TTL
// ran from some moment after the last attempt was sent; if that is long ago
// the validity is refreshed by a renewal rather than started nearly spent.
//
// g must be newer than the waiter's last failed attempt (g.token > floor).
func (l *lock) granted(ctx context.Context, g *grant) (driver.Validity, error) {
	l.token = g.token
	v := driver.Validity{Since: l.sent, TTL: min(g.ttl, l.ttl)}
	if time.Since(l.sent) < v.TTL/4 {
		return v, nil
	}
	return l.Renew(ctx)
}

func (l *lock) Renew(ctx context.Context) (driver.Validity, error) {
	since := time.Now()
	if len(l.d.nodes) == 1 {
		n := l.d.nodes[0]
		ok, err := n.run(ctx, renewScript, []string{l.keys.lock}, l.value, ttlMillis(l.ttl)).Int64()
		if err != nil {
			return driver.Validity{}, n.errorf(l.keys.lock, err)
		}
		if ok != 1 {
			return driver.Validity{}, fmt.Errorf("%w: key %q is gone or has another owner", driver.ErrLockLost, l.keys.lock)
		}
		return driver.Validity{Since: since, TTL: l.ttl}, nil
	}
	owned, notOwned, errs := l.d.each(ctx, l.keys.lock, func(ctx context.Context, n *node) (int64, error) {
		return n.run(ctx, renewScript, []string{l.keys.lock}, l.value, ttlMillis(l.ttl)).Int64()
	})
	switch {
	case owned >= l.d.quorum:
		return driver.Validity{Since: since, TTL: l.ttl - drift(l.ttl)}, nil
	case notOwned > len(l.d.nodes)-l.d.quorum:
		return driver.Validity{}, fmt.Errorf("%w: key %q is held on %d of %d nodes, want %d",
			driver.ErrLockLost, l.keys.lock, owned, len(l.d.nodes), l.d.quorum)
	}
	return driver.Validity{}, l.d.quorumError(fmt.Sprintf("renewed on %d of %d nodes, want %d", owned, len(l.d.nodes), l.d.quorum), errs)
}

// Release implements driver.Lock. It is owner-checked on every node, so a
// second call (the portable layer retries a failed release) changes nothing
// that is not this lock's.
func (l *lock) Release(ctx context.Context) error {
	if len(l.d.nodes) == 1 {
		n := l.d.nodes[0]
		ok, err := n.run(ctx, releaseScript, []string{l.keys.lock, l.keys.queue, l.keys.fence, l.keys.gone},
			l.value, l.keys.channel, ttlMillis(l.ttl), 0).Int64()
		if err != nil {
			return n.errorf(l.keys.lock, err)
		}
		if l.waited {
			// The key is no longer ours: a grant message for this owner
			// still on its way now finds nothing to give back.
			n.hub.forget(l.owner)
		}
		if ok != 1 {
			return fmt.Errorf("%w: key %q is gone or has another owner", driver.ErrLockLost, l.keys.lock)
		}
		return nil
	}
	ks := []string{l.keys.lock, l.keys.queue, l.keys.alive, l.keys.gone}
	owned, notOwned, errs := l.d.each(ctx, l.keys.lock, func(ctx context.Context, n *node) (int64, error) {
		return n.run(ctx, rlReleaseScript, ks, l.value, l.keys.channel, l.owner, goneMillis(l.ttl)).Int64()
	})
	switch {
	case owned >= l.d.quorum:
		return nil
	case notOwned > len(l.d.nodes)-l.d.quorum:
		return fmt.Errorf("%w: key %q was held on %d of %d nodes at release, want %d",
			driver.ErrLockLost, l.keys.lock, owned, len(l.d.nodes), l.d.quorum)
	}
	return l.d.quorumError(fmt.Sprintf("released on %d of %d nodes", owned, len(l.d.nodes)), errs)
}

// dequeue takes a waiter that gives up out of the queue, so that no
// release wakes it in vain.
func (l *lock) dequeue(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if len(l.d.nodes) == 1 {
		_ = l.d.nodes[0].run(ctx, dequeueScript, []string{l.keys.queue}, l.owner).Err()
		return
	}
	ks := []string{l.keys.queue, l.keys.alive, l.keys.lock}
	fanOut(len(l.d.nodes), func(i int) {
		_ = l.d.nodes[i].run(ctx, dequeueScript, ks, l.owner, l.keys.channel).Err()
	})
}

// each runs fn on every node in parallel and counts the replies 1 (owned)
// and 0 (not owned).
func (d *Driver) each(ctx context.Context, key string, fn func(context.Context, *node) (int64, error)) (owned, notOwned int, errs []error) {
	var mu sync.Mutex
	fanOut(len(d.nodes), func(i int) {
		n := d.nodes[i]
		v, err := fn(ctx, n)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			errs = append(errs, n.errorf(key, err))
		case v == 1:
			owned++
		default:
			notOwned++
		}
	})
	return owned, notOwned, errs
}

// quorumError reports that too few nodes answered: unavailable if every
// failure may pass, otherwise the permanent failures come first.
func (d *Driver) quorumError(what string, errs []error) error {
	err := fmt.Errorf("redislock: %s: %w", what, errors.Join(errs...))
	for _, e := range errs {
		if !errors.Is(e, driver.ErrUnavailable) {
			return err
		}
	}
	return driver.Unavailable(err)
}
