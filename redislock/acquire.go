package redislock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Acquire implements driver.Driver.
func (d *Driver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	if d.closed.Load() {
		return nil, driver.Validity{}, driver.ErrClosed
	}
	if err := d.check(req); err != nil {
		return nil, driver.Validity{}, err
	}
	if err := d.checkNodes(ctx); err != nil {
		return nil, driver.Validity{}, err
	}
	a := &acquirer{d: d, l: d.topo.newLock(d.keysOf(req.Name), d.owner(req.Mode, req.Limit), req)}
	defer a.trim() // after cleanup
	defer a.cleanup(ctx)
	return a.run(ctx, req.Wait)
}

// keyTrimmer is a candidate that, once granted and done acquiring, drops
// the names it needs only while acquiring (redlock_release.go).
type keyTrimmer interface{ trimKeys() }

// trim lets a granted lock drop what it needs only while acquiring: a
// held lock's heap is what a client holding many pays per lock.
func (a *acquirer) trim() {
	if t, ok := a.l.(keyTrimmer); ok && a.granted {
		t.trimKeys()
	}
}

// check refuses a request the driver cannot grant as asked: a primitive its
// topology does not offer (driver.ErrNotSupported), or a Mode or Limit out
// of range, or a Value with a request that is not an exclusive lock.
func (d *Driver) check(req driver.Request) error {
	shared, semaphore, election := d.topo.primitives()
	switch {
	case req.Mode != driver.Exclusive && req.Mode != driver.Shared:
		return driver.InvalidArgument("Request.Mode", req.Mode, "Exclusive or Shared")
	case req.Limit < 0:
		return driver.InvalidArgument("Request.Limit", req.Limit, "0 (a lock) or a number of permits >= 1")
	case req.Limit > 0 && req.Mode != driver.Exclusive:
		return driver.InvalidArgument("Request.Mode", req.Mode, "Exclusive with a Limit (a semaphore's permits are not shared)")
	case req.Mode == driver.Shared && !shared:
		return fmt.Errorf("%w: read-write locks (a shared request) with %s", driver.ErrNotSupported, d.topo.kind())
	case req.Limit > 0 && !semaphore:
		return fmt.Errorf("%w: semaphores (a request with a Limit) with %s", driver.ErrNotSupported, d.topo.kind())
	case req.Value != "" && !election:
		return fmt.Errorf("%w: leader election (a request with a Value) with %s", driver.ErrNotSupported, d.topo.kind())
	case req.Value != "" && (req.Mode != driver.Exclusive || req.Limit > 0):
		return driver.InvalidArgument("Request.Value", fmt.Sprintf("%d bytes", len(req.Value)),
			"empty for a shared request or a permit (a value is an election leader's, kept with an exclusive lock)")
	}
	return nil
}

// candidate is one acquisition, from its first attempt to the lock it
// holds: a singleLock (lock.go) or a redlockLock (redlock.go). The acquirer
// drives it and does the waiting, which is the same for both.
type candidate interface {
	driver.Lock
	base() *lockBase
	// attempt tries once. w is the waiter once it is subscribed (the
	// attempt queues it if the lock is held), nil before.
	attempt(ctx context.Context, w *waiter) attempt
	// granted takes over a lock that a release handed to the waiter.
	granted(ctx context.Context, g *grant) (driver.Validity, error)
	// tookAfterWait is told that the lock was taken after waiting.
	tookAfterWait()
	// abandon takes a waiter that gives up out of the queues, and gives
	// back a lock a release handed to it meanwhile.
	abandon(ctx context.Context, w *waiter)
	// partialJoin: the waiter counts as subscribed once some of the hubs
	// it joined have confirmed and a moment has passed (Redlock: a node
	// that does not confirm cannot be part of the next holder's majority).
	partialJoin() bool
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

// acquirer is one Acquire call: its attempts, and its place among the
// waiters.
//
// A waiter subscribes to the lock's release channel and, once the server
// has confirmed that, looks again: a release between the failed attempt and
// the subscription would otherwise go unseen. Only a subscribed waiter is
// queued (a release wakes, or on a single node grants, the first in the
// queue). A waiter whose subscription cannot be made or is not yet confirmed
// still waits, on the holder's expiry, and tries to subscribe again: a
// blocking Lock does not fail because of its own notification plumbing.
type acquirer struct {
	d *Driver
	l candidate
	w *waiter // nil until the first failed attempt of a waiting Acquire

	joined    []*node           // the hubs w joined
	confirmed []<-chan struct{} // per joined hub: closed once subscribed
	// subscribed: releases on the nodes reach w (every joined hub
	// confirmed, or with Redlock joinBy passed and at least one did), so
	// attempts queue it.
	subscribed bool
	joinBy     time.Time
	joinFails  int // consecutive failures to subscribe anywhere

	granted bool
	passOn  bool // an attempt failed after a wake-up it may have consumed
}

func (a *acquirer) run(ctx context.Context, wait bool) (driver.Lock, driver.Validity, error) {
	l := a.l
	for {
		var queued *waiter
		if a.subscribed {
			queued = a.w
		}
		res := l.attempt(ctx, queued)
		if res.err == nil && res.granted {
			a.took()
			return l, res.validity, nil
		}
		if res.err != nil || !wait {
			a.passOn = true
			if res.err != nil {
				return nil, driver.Validity{}, res.err
			}
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
		if a.w == nil {
			a.w = newWaiter(l.base().owner)
		}
		if res.floor > 0 {
			a.w.floor.Store(res.floor)
		}
		if len(a.joined) == 0 {
			if err := a.join(ctx); err != nil {
				return nil, driver.Validity{}, err
			}
		}
		if !sleep(ctx, res.pause) {
			return nil, driver.Validity{}, ctx.Err()
		}
		if res.pause > 0 {
			continue
		}
		d := res.wait
		switch {
		case a.subscribed:
		case len(a.joined) == 0:
			d = min(d, a.joinBackoff()) // subscribe again soon
		case l.partialJoin():
			d = min(d, max(time.Until(a.joinBy), 0))
		}
		g, err := a.wait(ctx, d)
		if err != nil {
			return nil, driver.Validity{}, err
		}
		if g != nil {
			v, err := l.granted(ctx, g)
			if err != nil {
				return nil, driver.Validity{}, err // cleanup gives the grant back
			}
			a.took()
			return l, v, nil
		}
	}
}

// wait sleeps until a release wakes the waiter, the subscription is made,
// d passes or ctx ends. It returns the grant if a release handed the lock
// over (single node).
func (a *acquirer) wait(ctx context.Context, d time.Duration) (*grant, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-a.w.wake:
		case <-t.C:
			a.checkSubscribed()
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if g := a.w.fresh(); g != nil {
			return g, nil
		}
		if at := a.w.deferTo.Swap(0); at != 0 {
			// A release left the lock free for others a while (Barging):
			// try then, or when woken before.
			t.Reset(time.Until(time.Unix(0, at)))
			continue
		}
		if a.subscribed || a.checkSubscribed() {
			return nil, nil // a release, or now subscribed: look again
		}
		// Some hubs confirmed, not enough yet: keep waiting.
	}
}

// join subscribes w on every node that takes the SUBSCRIBE. Failing
// everywhere is not an error unless it will not pass (the driver or the
// user's client closed): the waiter waits on the holder's expiry and tries
// again.
func (a *acquirer) join(ctx context.Context) error {
	nodes := a.d.nodes
	chans := make([]<-chan struct{}, len(nodes))
	errs := make([]error, len(nodes))
	channel, w := a.l.base().keys.channel, a.w // not a itself: the closure would move it to the heap
	fanOut(len(nodes), func(i int) {
		chans[i], errs[i] = nodes[i].hub.join(ctx, channel, w)
	})
	for i, n := range nodes {
		if errs[i] == nil {
			a.joined = append(a.joined, n)
			a.confirmed = append(a.confirmed, chans[i])
		}
	}
	if len(a.joined) > 0 {
		// A node that does not confirm soon is left out rather than
		// holding up the wait on the others: the unreachable nodes cannot
		// be part of the next holder's majority, and the timer covers
		// expiries.
		a.joinFails = 0
		a.joinBy = time.Now().Add(time.Second)
		a.checkSubscribed()
		return nil
	}
	for _, err := range errs {
		if errors.Is(err, driver.ErrClosed) {
			return driver.ErrClosed
		}
		if permanent(err) {
			return nodes[0].errorf(a.l.base().keys.channel, err)
		}
	}
	a.joinFails++
	return nil
}

// joinBackoff is the pause before subscribing again after a failure.
func (a *acquirer) joinBackoff() time.Duration {
	d := min(50*time.Millisecond<<min(a.joinFails, 6), 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

// checkSubscribed updates subscribed from the hubs' confirmations.
func (a *acquirer) checkSubscribed() bool {
	if a.subscribed || len(a.confirmed) == 0 {
		return a.subscribed
	}
	n := 0
	for _, c := range a.confirmed {
		select {
		case <-c:
			n++
		default:
		}
	}
	a.subscribed = n == len(a.confirmed) || n > 0 && !time.Now().Before(a.joinBy)
	return a.subscribed
}

// took marks the lock ours, before the waiter leaves the hubs (cleanup).
func (a *acquirer) took() {
	a.granted = true
	if a.w == nil {
		return
	}
	select {
	case <-a.w.wake: // stale: the release it announced is ours now
	default:
	}
	a.l.tookAfterWait()
}

// cleanup leaves the hubs and, if the lock was not granted, takes the
// waiter out of the queues and gives back a grant made to it meanwhile.
func (a *acquirer) cleanup(ctx context.Context) {
	if a.w == nil {
		return
	}
	for _, n := range a.joined {
		n.hub.leave(a.l.base().keys.channel, a.w, a.passOn && !a.granted)
	}
	if !a.granted {
		a.l.abandon(ctx, a.w)
	}
}

// sleep waits d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
