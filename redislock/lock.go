package redislock

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock/driver"
)

// This file is the lock on a single node (a server, or one Cluster slot or
// Sentinel master): its attempts, the hand-over by a release, renewal and
// release. redlock.go is the same for a majority of independent masters.

var (
	_ topology    = (*single)(nil)
	_ candidate   = (*singleLock)(nil)
	_ driver.Lock = (*singleLock)(nil)
)

// lockBase is what the two kinds of lock share.
type lockBase struct {
	keys  keys
	owner string // the acquisition's id; a waiter's id in queues and wake-ups
	ttl   time.Duration
	token uint64
}

func (l *lockBase) base() *lockBase { return l }

func (l *lockBase) Token() uint64 { return l.token }

// Lost returns nil: Redis does not tell a holder that its key went away;
// renewal and the portable layer's deadline do.
func (l *lockBase) Lost() <-chan struct{} { return nil }

// single is the topology of a driver on one node.
type single struct {
	d *Driver
	n *node
}

func (s *single) newLock(k keys, owner string, req driver.Request) candidate {
	l := &singleLock{lockBase: lockBase{keys: k, owner: owner, ttl: req.TTL}, d: s.d, n: s.n,
		limit: req.Limit, value: req.Value}
	l.valued.Store(req.Value != "")
	return l
}

func (s *single) kind() string { return "a single Redis node" }

// primitives: a single node grants readers and permits, and keeps an
// election leader's value (scripts/single.lua).
func (s *single) primitives() (shared, semaphore, election bool) { return true, true, true }

func (s *single) notes() []string {
	return []string{"single Redis node (or one Cluster slot / Sentinel master): tokens come from a counter on the node; " +
		"a restart without persistence or a failover to a replica behind on asynchronous replication can repeat " +
		"tokens and grant a lock twice; an eviction policy other than noeviction can drop lock keys " +
		"(allkeys-* is refused: it can drop the counter too)"}
}

// status reads the lock: its exclusive holder, or its readers or permits.
func (s *single) status(ctx context.Context, k keys) (driver.Status, error) {
	v, err := s.n.run(ctx, sStatusScript, k.single()).Int64Slice()
	if err == nil && len(v) != 7 {
		err = fmt.Errorf("unexpected reply %v", v)
	}
	if err != nil {
		return driver.Status{}, s.n.errorf(k.lock, err)
	}
	st := driver.Status{Waiters: int(max(v[2], 0))}
	if v[0] == 1 {
		st.Held, st.Token, st.Holders = true, uint64(max(v[1], 0)), int(v[3])
		st.Limit, st.TTLLeft = int(v[5]), time.Duration(v[6])*time.Millisecond
		if v[4] == 1 {
			st.Mode = driver.Shared
		}
	}
	return st, nil
}

// singleLock is one acquisition on a single node. The lock key holds its
// owner id if it is exclusive; the shared holders' set does if it is a
// reader or a permit (the owner id says which: Driver.owner).
type singleLock struct {
	lockBase
	d     *Driver
	n     *node
	limit int // the semaphore's permits, 0 for a lock
	// sent is when the last attempt was sent: a grant by a release came
	// after it, so the granted TTL runs from no earlier.
	sent time.Time
	// waited: Acquire queued for this lock, so a release may have granted
	// it by a message that can still arrive.
	waited bool
	// value is the Request's, kept with the lock from its grant on;
	// valued says that the lock may have a value key (the Request's or
	// SetValue's) for Renew to extend with it.
	value  string
	valued atomic.Bool
}

func (l *singleLock) attempt(ctx context.Context, w *waiter) attempt {
	since := time.Now()
	l.sent = since
	q := ""
	if w != nil {
		q = "1"
	}
	v, err := l.n.runInts(ctx, acquireScript, l.keys.single(), l.owner, ttlMillis(l.ttl), q, l.value)
	if err == nil && (len(v) < 2 || v[0] == 0 && len(v) != 3 && len(v) != 4) {
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
		return attempt{err: l.n.errorf(l.keys.lock, err)}
	}
	switch v[0] {
	case 1:
		l.token = uint64(v[1])
		return attempt{granted: true, validity: driver.Validity{Since: since, TTL: l.ttl}}
	case 2:
		return attempt{err: mismatch(l.limit, int(v[1]))}
	}
	// PTTL counts whole milliseconds, rounded down: add one so that the
	// retry comes after the key is gone, not just before.
	wait := time.Duration(v[1]+1) * time.Millisecond
	if len(v) == 4 {
		// A barging waiter at the head: releases do not wake it until its
		// bound is up (scripts/single.lua, handOver).
		wait = min(wait, time.Duration(v[3])*time.Microsecond)
	}
	return attempt{wait: wait, floor: uint64(v[2])}
}

// release runs release.lua for this owner: the lock is deleted, or handed
// to the first live waiter, if it is ours. refuse > 0 has the server refuse
// this owner's attempts for that many milliseconds if it is not.
func (l *singleLock) release(ctx context.Context, refuse int64) (int64, error) {
	return l.n.runInt(ctx, releaseScript, l.keys.single(), l.owner, l.keys.channel, ttlMillis(l.ttl), refuse)
}

// giveBack releases a lock this acquisition may hold but will not use (a
// grant to a waiter that gave up, an attempt whose reply was lost), passing
// it on to the next waiter. With late set, later copies of this owner's
// attempts are refused.
func (l *singleLock) giveBack(late bool) {
	ctx, cancel := driver.CleanupContext(context.Background())
	defer cancel()
	refuse := int64(0)
	if late {
		refuse = goneMillis(l.ttl)
	}
	_, _ = l.release(ctx, refuse)
}

// granted takes over a lock that a release handed to this waiter. The TTL
// ran from some moment after the last attempt was sent; if that is long ago
// the validity is refreshed by a renewal rather than started nearly spent.
//
// g must be newer than the waiter's last failed attempt (g.token > floor).
func (l *singleLock) granted(ctx context.Context, g *grant) (driver.Validity, error) {
	l.token = g.token
	v := driver.Validity{Since: l.sent, TTL: min(g.ttl, l.ttl)}
	if time.Since(l.sent) < v.TTL/4 {
		return v, nil
	}
	return l.Renew(ctx)
}

// tookAfterWait: a grant message for this waiter may still be on its way.
// The hub records the owner before the waiter leaves it, so that the
// message is not taken for a grant to a waiter that gave up (which would be
// given back).
func (l *singleLock) tookAfterWait() {
	l.waited = true
	l.n.hub.took(l.owner)
}

// abandon takes the waiter out of the queue, so that no release grants it
// the lock in vain and no reader or permit waits behind it; the same script
// gives back a grant a release made to it meanwhile, which passes the lock
// on (sdequeue.lua). If the server does not answer, the dequeue is retried
// in the background (node.cleanup): a grant made to this owner's leftover
// entry meanwhile is given back once the server is reachable again, whether
// or not its message reaches this client.
func (l *singleLock) abandon(ctx context.Context, _ *waiter) {
	l.n.cleanup(ctx, sDequeueScript, l.keys.single(), l.owner, l.keys.channel, ttlMillis(l.ttl))
}

// partialJoin: one node, one hub.
func (l *singleLock) partialJoin() bool { return false }

// Renew implements driver.Lock: RenewAsync, waited for.
func (l *singleLock) Renew(ctx context.Context) (driver.Validity, error) {
	return driver.WaitRenewal(ctx, l)
}

// RenewAsync implements driver.AsyncRenewer: the renewal goes in the
// node's next batch (batch.go), and done is called by the batch's sender;
// a node that cannot batch (a Cluster) runs it in a goroutine of its own.
func (l *singleLock) RenewAsync(ctx context.Context, done func(driver.Validity, error)) {
	since := time.Now()
	answer := func(ok bool, err error) {
		switch {
		case err != nil:
			done(driver.Validity{}, l.n.errorf(l.keys.lock, err))
		case !ok:
			done(driver.Validity{}, l.lost())
		default:
			done(driver.Validity{Since: since, TTL: l.ttl}, nil)
		}
	}
	if l.n.batch != nil {
		r := l.renewal()
		r.answer = answer
		l.n.batch.add(ctx, r)
		return
	}
	valued := "0"
	if l.valued.Load() {
		valued = "1"
	}
	l.n.bg.Go(func() {
		v, err := l.n.runInt(ctx, sRenewScript, l.keys.single(), l.owner, ttlMillis(l.ttl), valued)
		answer(v == 1, err)
	})
}

// renewal is the lock's entry in a batch (renewmany.lua).
func (l *singleLock) renewal() *renewal {
	r := &renewal{key: l.keys.lock, aux: l.keys.value, owner: l.owner, ttl: ttlMillis(l.ttl), kind: "x"}
	switch {
	case l.owner[len(l.owner)-2:] == ":s" || l.limit > 0:
		r.key, r.aux, r.kind = l.keys.shared, l.keys.tokens, "s"
	case l.valued.Load():
		r.kind = "v"
	}
	return r
}

// Release implements driver.Lock. It is owner-checked, so a second call
// (the portable layer retries a failed release) changes nothing that is not
// this lock's.
func (l *singleLock) Release(ctx context.Context) error {
	ok, err := l.releaseOwn(ctx)
	if err != nil {
		return l.n.errorf(l.keys.lock, err)
	}
	if l.waited {
		// The key is no longer ours: a grant message for this owner
		// still on its way now finds nothing to give back.
		l.n.hub.forget(l.owner)
	}
	if ok != 1 {
		return l.lost()
	}
	return nil
}

// lost is the error of a Renew or Release that found the hold gone.
func (l *singleLock) lost() error {
	if l.owner[len(l.owner)-2:] == ":s" || l.limit > 0 {
		return fmt.Errorf("%w: %q is not among the holders of %q (its hold ran out, or was deleted)",
			driver.ErrLockLost, l.owner, l.keys.shared)
	}
	return fmt.Errorf("%w: key %q is gone or has another owner", driver.ErrLockLost, l.keys.lock)
}

// mismatch is the error of a request with limit (0: a lock) for a name
// held or awaited with other.
func mismatch(limit, other int) error {
	what := func(n int) string {
		if n == 0 {
			return "a lock (Limit 0)"
		}
		return fmt.Sprintf("a semaphore of %d permits", n)
	}
	return driver.InvalidArgument("Limit", limit, fmt.Sprintf("%d: the name is held or awaited as %s, not as %s",
		other, what(other), what(limit)))
}
