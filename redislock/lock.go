package redislock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
)

// lock is one acquisition: granted, or still being tried by Acquire.
type lock struct {
	d     *Driver
	keys  keys
	owner string
	ttl   time.Duration
	token uint64
	fails int // consecutive attempts that could not reach a majority
	// ticket is a Redlock waiter's place in the nodes' queues: the time it
	// began to wait, the same on every node.
	ticket int64
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
	retry    bool          // with err: a waiting Lock should try again later
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

// attempt tries once; queued says the caller is subscribed and, on a
// single node, should be queued for a wake-up if the lock is held.
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
	v, err := acquireScript.Run(ctx, n.rdb, []string{l.keys.lock, l.keys.fence, l.keys.queue}, l.owner, ttlMillis(l.ttl), q).Int64Slice()
	if err == nil && (len(v) < 2 || v[0] == 0 && len(v) != 3) {
		err = fmt.Errorf("unexpected reply %v", v)
	}
	if err != nil {
		if !isServerError(err) {
			// The script may have run and its reply been lost: give back
			// what may be ours rather than leave it until the TTL runs out.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			l.release(rctx, true)
			cancel()
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
		ok, err := renewScript.Run(ctx, n.rdb, []string{l.keys.lock}, l.owner, ttlMillis(l.ttl)).Int64()
		if err != nil {
			return driver.Validity{}, n.errorf(l.keys.lock, err)
		}
		if ok != 1 {
			return driver.Validity{}, fmt.Errorf("%w: key %q is gone or has another owner", driver.ErrLockLost, l.keys.lock)
		}
		return driver.Validity{Since: since, TTL: l.ttl}, nil
	}
	owned, notOwned, errs := l.d.each(ctx, l.keys.lock, func(ctx context.Context, n *node) (int64, error) {
		return renewScript.Run(ctx, n.rdb, []string{l.keys.lock}, l.owner, ttlMillis(l.ttl)).Int64()
	})
	switch {
	case owned >= l.d.quorum:
		return driver.Validity{Since: since, TTL: l.ttl - drift(l.ttl)}, nil
	case notOwned > len(l.d.nodes)-l.d.quorum:
		return driver.Validity{}, fmt.Errorf("%w: key %q is held on %d of %d nodes, want %d",
			driver.ErrLockLost, l.keys.lock, owned, len(l.d.nodes), l.d.quorum)
	}
	return driver.Validity{}, fmt.Errorf("redislock: renewed on %d of %d nodes, want %d: %w",
		owned, len(l.d.nodes), l.d.quorum, errors.Join(errs...))
}

func (l *lock) Release(ctx context.Context) error {
	if len(l.d.nodes) == 1 {
		n := l.d.nodes[0]
		ok, err := releaseScript.Run(ctx, n.rdb, []string{l.keys.lock, l.keys.queue, l.keys.fence}, l.owner, l.keys.channel, ttlMillis(l.ttl)).Int64()
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
	owned, notOwned, errs := l.release(ctx, true)
	switch {
	case owned >= l.d.quorum:
		return nil
	case notOwned > len(l.d.nodes)-l.d.quorum:
		return fmt.Errorf("%w: key %q was held on %d of %d nodes at release, want %d",
			driver.ErrLockLost, l.keys.lock, owned, len(l.d.nodes), l.d.quorum)
	}
	return fmt.Errorf("redislock: released on %d of %d nodes: %w", owned, len(l.d.nodes), errors.Join(errs...))
}

// release deletes the key where it is ours, on every node; wake names the
// first waiter in line (a holder's release), otherwise nobody is woken (a
// failed attempt giving back what it took).
func (l *lock) release(ctx context.Context, wake bool) (owned, notOwned int, errs []error) {
	if len(l.d.nodes) == 1 {
		n := l.d.nodes[0]
		v, err := releaseScript.Run(ctx, n.rdb, []string{l.keys.lock, l.keys.queue, l.keys.fence}, l.owner, l.keys.channel, ttlMillis(l.ttl)).Int64()
		switch {
		case err != nil:
			errs = append(errs, n.errorf(l.keys.lock, err))
		case v == 1:
			owned++
		default:
			notOwned++
		}
		return owned, notOwned, errs
	}
	channel := ""
	if wake {
		channel = l.keys.channel
	}
	ks := []string{l.keys.lock, l.keys.queue, l.keys.alive}
	return l.d.each(ctx, l.keys.lock, func(ctx context.Context, n *node) (int64, error) {
		return rlReleaseScript.Run(ctx, n.rdb, ks, l.owner, channel).Int64()
	})
}

// dequeue takes a waiter that gives up out of the queue, so that no
// release wakes it in vain.
func (l *lock) dequeue(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if len(l.d.nodes) == 1 {
		_ = dequeueScript.Run(ctx, l.d.nodes[0].rdb, []string{l.keys.queue}, l.owner).Err()
		return
	}
	ks := []string{l.keys.queue, l.keys.alive, l.keys.lock}
	fanOut(len(l.d.nodes), func(i int) {
		_ = dequeueScript.Run(ctx, l.d.nodes[i].rdb, ks, l.owner, l.keys.channel).Err()
	})
}

// drift is Redlock's allowance for the nodes' clocks running faster than
// ours.
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

// redlock makes one Redlock attempt: lock on a majority within the validity
// time, then raise the fence counters of a majority to the new token.
func (l *lock) redlock(ctx context.Context, queued bool) attempt {
	d := l.d
	nn := len(d.nodes)
	since := time.Now()
	valid := l.ttl - drift(l.ttl)
	if valid <= 0 {
		return attempt{err: fmt.Errorf("%w: TTL %v is too short for Redlock's drift allowance %v",
			driver.ErrInvalidArgument, l.ttl, drift(l.ttl))}
	}
	deadline := since.Add(valid)
	// Past the deadline a node's answer is useless, so no request outlives
	// it; the requests run without the caller's cancellation so that a
	// cancelled Lock still learns where it took the key and gives it back.
	nctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)

	type reply struct {
		i   int
		got bool
		n   int64 // fence if got, else PTTL
		err error
	}
	replies := make(chan reply, nn)
	ticket := ""
	if queued {
		ticket = strconv.FormatInt(l.ticket, 10)
	}
	ks := []string{l.keys.lock, l.keys.fence, l.keys.queue, l.keys.alive}
	for i, n := range d.nodes {
		go func() {
			v, err := lockScript.Run(nctx, n.rdb, ks, l.owner, ttlMillis(l.ttl), ticket).Int64Slice()
			if err == nil && len(v) != 2 {
				err = fmt.Errorf("unexpected reply %v", v)
			}
			if err != nil {
				replies <- reply{i: i, err: n.errorf(l.keys.lock, err)}
				return
			}
			replies <- reply{i: i, got: v[0] == 1, n: v[1]}
		}()
	}
	var (
		got   []int
		fence int64
		pttls []int64
		errs  []error
	)
	received := 0
	for received < nn && len(got) < d.quorum && len(got)+nn-received >= d.quorum {
		r := <-replies
		received++
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.got:
			got = append(got, r.i)
			fence = max(fence, r.n)
		default:
			pttls = append(pttls, r.n)
		}
	}
	if len(got) >= d.quorum && time.Now().Before(deadline) {
		token := uint64(fence) + 1
		// Stragglers may still take the key on their node: that is ours
		// too, renewed and released with the rest, and it gets the token
		// as well (best effort, not waited for), so that more than a
		// bare majority carries it should one of the majority lose its
		// data.
		go func() {
			defer cancel()
			for range nn - received {
				if r := <-replies; r.got {
					_ = fenceScript.Run(nctx, d.nodes[r.i].rdb, []string{l.keys.lock, l.keys.fence}, l.owner, token).Err()
				}
			}
		}()
		fctx, fcancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		err := l.writeFence(fctx, got, token)
		fcancel()
		if err == nil && time.Now().Before(deadline) {
			l.token = token
			return attempt{granted: true, validity: driver.Validity{Since: since, TTL: valid}}
		}
		if err != nil {
			errs = append(errs, err)
		}
		got = nil // fall through to giving everything back
	} else {
		for range nn - received {
			r := <-replies
			switch {
			case r.err != nil:
				errs = append(errs, r.err)
			case r.got:
				got = append(got, r.i)
			default:
				pttls = append(pttls, r.n)
			}
		}
		cancel()
	}

	// Failed: give back whatever was taken, on every node (a request that
	// timed out may have taken it too).
	if len(got) > 0 || len(errs) > 0 || time.Now().After(deadline) {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), valid)
		l.release(rctx, false)
		rcancel()
	}
	held := len(pttls)
	if held > nn-d.quorum {
		// Someone else holds a majority: wait for its release, or for
		// enough of its keys to expire that a majority could be free.
		l.fails = 0
		slices.Sort(pttls)
		k := held - (nn - d.quorum) // that many keys must go
		return attempt{wait: time.Duration(pttls[k-1]+1) * time.Millisecond}
	}
	if len(errs) > nn-d.quorum {
		// Too few nodes answered: try again after a growing pause; the
		// pub/sub reconnection also wakes waiters when a node returns.
		l.fails++
		backoff := min(10*time.Millisecond<<min(l.fails, 7), time.Second)
		return attempt{retry: true, wait: backoff/2 + rand.N(backoff/2+1),
			err: fmt.Errorf("redislock: key %q: %d of %d nodes unreachable, a majority of %d is needed: %w",
				l.keys.lock, len(errs), nn, d.quorum, errors.Join(errs...))}
	}
	// A split vote (or a grant that came too late): contenders that try
	// again at once would split again, so each waits a random moment.
	l.fails = 0
	return attempt{pause: rand.N(5 * time.Millisecond), wait: rand.N(5 * time.Millisecond)}
}

// writeFence raises the fence counter to token on the nodes in got, where
// the key is still ours; a majority must confirm.
func (l *lock) writeFence(ctx context.Context, got []int, token uint64) error {
	var mu sync.Mutex
	ok := 0
	var errs []error
	fanOut(len(got), func(j int) {
		n := l.d.nodes[got[j]]
		v, err := fenceScript.Run(ctx, n.rdb, []string{l.keys.lock, l.keys.fence}, l.owner, token).Int64()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, n.errorf(l.keys.fence, err))
		} else if v == 1 {
			ok++
		}
	})
	if ok < l.d.quorum {
		return fmt.Errorf("redislock: fence token written on %d nodes, want %d: %w", ok, l.d.quorum, errors.Join(errs...))
	}
	return nil
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

// fanOut runs fn(0..n-1) in parallel and waits for all.
func fanOut(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

// isServerError reports whether Redis answered with an error, as opposed to
// the request or its reply getting lost.
func isServerError(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func sortDesc(s []int64) { slices.SortFunc(s, func(a, b int64) int { return int(b - a) }) }
