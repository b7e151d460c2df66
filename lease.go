package dlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Lease is one holding of a lock, from a successful Lock or TryLock until
// Unlock, loss or the client's Close. It is safe for concurrent use.
//
// What holding does not guarantee: a holder that is paused (GC, swap, a
// stopped VM) or cut off longer than the TTL may still run after the engine
// granted the lock to someone else. Done closes before that can happen only
// if the holder's own clock and scheduler keep running. Pass Token to the
// protected resource and have it refuse older tokens.
type Lease struct {
	c       *Client
	prim    primitive
	name    string
	token   uint64
	held    driver.Lock
	cfg     config
	metered bool      // its grant was counted in dlock.held: its end is too
	granted time.Time // if metered

	ctx    context.Context // cancelled on loss or end
	cancel context.CancelCauseFunc

	// cutRenewal cancels the renewal in flight, if any; l.mu. A renewal's
	// context is not a child of ctx: a parent keeps the map of children
	// it once had, a few hundred bytes per lease for its whole life.
	cutRenewal context.CancelFunc

	// No goroutine per lease: renewal, the safety deadline and the maximum
	// hold time are timers. Only a driver that pushes losses (Lost() != nil)
	// costs a goroutine that waits on it.
	renewT, deadlineT, maxHoldT *time.Timer // renewT: nil when c.grid schedules renewals
	due                         int64       // the c.grid point l renews at (0: none); c.grid.mu
	slot                        int         // l's index in that point's leases; c.grid.mu

	renewMu sync.Mutex      // held while a renewal runs; end waits out one in flight
	v       driver.Validity // the last validity; renewMu

	unreleased bool // ended while the client closed: Close releases it; c.mu

	mu        sync.Mutex
	state     leaseState
	err       error // why the lease ended
	renewFail error // the first error of the current run of failed renewals
}

type leaseState int

const (
	stateHeld leaseState = iota
	stateLost
	stateEnded // released by Unlock, or by Client.Close
)

func (c *Client) startLease(prim primitive, metered bool, name string, cfg config, held driver.Lock, v driver.Validity) (*Lease, error) {
	var granted time.Time
	if metered {
		granted = time.Now()
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{
		c: c, prim: prim, metered: metered, granted: granted, name: name, token: held.Token(), held: held, cfg: cfg, v: v,
		ctx: ctx, cancel: cancel,
	}
	// Timers are made stopped and armed once all of them exist, so that no
	// callback sees a half-built lease.
	if c.grid == nil {
		l.renewT = time.AfterFunc(time.Hour, l.renew)
		l.renewT.Stop()
	}
	l.deadlineT = time.AfterFunc(time.Hour, l.deadlinePassed)
	l.deadlineT.Stop()
	if cfg.maxHold > 0 {
		l.maxHoldT = time.AfterFunc(time.Hour, func() {
			l.loseAndRelease(lossMaxHold, fmt.Errorf("%w: maximum hold time %v reached", ErrLockLost, cfg.maxHold))
		})
		l.maxHoldT.Stop()
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel(ErrClosed)
		rctx, rcancel := context.WithTimeout(context.Background(), min(cfg.ttl, CloseTimeout))
		defer rcancel()
		return nil, errors.Join(wrap(name, "lock", ErrClosed), wrap(name, "release", held.Release(rctx)))
	}
	c.leases[l] = struct{}{}
	notifier, notify := held.(driver.LossNotifier)
	if !notify {
		if lost := held.Lost(); lost != nil {
			c.calls.Add(1)
			go l.watchLost(lost)
		}
	}
	c.mu.Unlock()
	if notify {
		notifier.NotifyLost(l.engineLost)
	}

	l.deadlineT.Reset(time.Until(l.deadlineOf(v)))
	l.scheduleRenewal(l.renewAt(v))
	if l.maxHoldT != nil {
		l.maxHoldT.Reset(cfg.maxHold)
	}
	return l, nil
}

// Name returns the lock's name.
func (l *Lease) Name() string { return l.name }

// Token returns the fencing token: for one lock name it strictly increases in
// the order the engine granted the lock. How strongly depends on the driver
// (Client.Capabilities).
func (l *Lease) Token() uint64 { return l.token }

// Driver returns the driver's lock behind the lease, for optional
// interfaces a driver documents (filelock's held file, for one).
func (l *Lease) Driver() driver.Lock { return l.held }

// Done returns a channel that is closed when the lease ends: lost, unlocked,
// or its client closed.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Context returns a context that is cancelled when the lease ends.
// context.Cause tells why.
func (l *Lease) Context() context.Context { return l.ctx }

// Err returns nil while the lease is held; after it ends, an error matching
// ErrLockLost (lost), ErrNotHeld (unlocked) or ErrClosed (client closed).
// An unlocked lease's Err changes once, from ErrNotHeld to ErrLockLost, if
// Unlock's release finds that the engine no longer held the lock for it.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Unlock gives the lock up. The lease ends at once, before any round trip
// to the engine: Done is closed and Err matches ErrNotHeld when Unlock is
// called. Unlock then releases the lock if the engine still holds it for
// this lease, waiting for the engine until ctx ends or for at most the
// lock's TTL (and never more than CloseTimeout), whichever comes first.
//
// It returns nil if the engine had the lock and gave it up, an error
// matching ErrLockLost if the lease was lost (the engine is left unchanged:
// another holder's lock is never touched; where a release whose reply was
// lost to a reset cannot be told from a loss, the error says the outcome
// is unknown: the lock is not held either way), ErrNotHeld if it was already
// released, or the engine's error if the release failed or was not answered
// in time. In that last case the release is retried in the background until
// the engine answers or the client is closed; a lock whose engine stays
// unreachable is dropped by the engine when its TTL runs out. An Unlock
// that meets a Close already releasing the client's leases returns nil at
// once and leaves the release, and what it finds, to Close.
func (l *Lease) Unlock(ctx context.Context) error {
	if ctx == nil {
		return wrap(l.name, "unlock", invalid("ctx", nil, "a non-nil context.Context"))
	}
	ended, slot := l.finish(stateEnded, ErrNotHeld)
	if !ended {
		return l.Err()
	}
	if !slot {
		return nil // Close is running and releases it with the rest
	}
	defer l.c.calls.Done()
	return l.release(ctx, true)
}

// finish ends a held lease (Done closed) as state with reason; only the
// first of several concurrent endings does, and reports ended. Renewal
// stops and a renewal in flight is cut short. With slot, the caller holds a
// c.calls slot for the release and must release; without it the client is
// closing and Close releases the lock (l.unreleased).
func (l *Lease) finish(state leaseState, reason error) (ended, slot bool) {
	c := l.c
	c.mu.Lock()
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		c.mu.Unlock()
		return false, false
	}
	l.state = state
	l.err = wrap(l.name, "lease", reason)
	err := l.err
	cut := l.cutRenewal
	l.mu.Unlock()
	delete(c.leases, l)
	if slot = !c.closed; slot {
		c.calls.Add(1)
	} else {
		l.unreleased = true
	}
	c.mu.Unlock()
	l.cancel(err)
	if cut != nil {
		cut()
	}
	l.stopTimers()
	end := endReleased
	switch {
	case state == stateLost:
		end = endLost
	case errors.Is(reason, ErrClosed):
		end = endClosed
	}
	if t := c.tel; l.metered {
		t.held.Add(context.Background(), -1, t.prim[l.prim]...)
		t.holdDur.Record(context.Background(), time.Since(l.granted).Seconds(), t.ends[l.prim][end]...)
	}
	return true, slot
}

// releaseBound is how long one release waits for the engine.
func (l *Lease) releaseBound() time.Duration { return min(l.cfg.ttl, CloseTimeout) }

// release gives the lock back to the engine after the lease has ended, once
// any renewal in flight has returned or was cut short (a driver never sees
// Release overlap Renew; an AsyncRenewer's renewal cut short may still be
// in flight). It waits for the engine until ctx ends or releaseBound passes. If
// the release fails other than by finding the lock gone and retry is set,
// it is retried in the background. The caller holds a c.calls slot.
func (l *Lease) release(ctx context.Context, retry bool) error {
	l.renewMu.Lock() // a renewal in flight was cut short by finish
	l.renewMu.Unlock()
	bound := l.releaseBound()
	rctx, cancel := context.WithTimeout(ctx, bound)
	err := l.held.Release(rctx)
	cancel()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrLockLost):
		lost := wrap(l.name, "release", fmt.Errorf("%w: the engine no longer held it (%v)", ErrLockLost, err))
		l.mu.Lock()
		if l.state == stateEnded {
			l.err = lost
		}
		l.mu.Unlock()
		return lost
	}
	if rctx.Err() != nil && ctx.Err() == nil {
		err = driver.Unavailable(fmt.Errorf("no answer from the engine within %v: %w", bound, err))
	}
	if t := l.c.tel; t.log != nil {
		t.log.Warn("dlock: release failed", "dlock.lock.name", l.name, "dlock.token", l.token,
			"retrying", retry, "error", err)
	}
	if retry && l.c.begin() == nil {
		go l.retryRelease()
		err = fmt.Errorf("%w (retrying in the background)", err)
	}
	return wrap(l.name, "release", err)
}

// retryRelease repeats a failed release, with backoff, until the engine
// answers it or the client closes. It owns a c.calls slot.
func (l *Lease) retryRelease() {
	defer l.c.calls.Done()
	b := backoff{base: 50 * time.Millisecond, max: min(max(l.cfg.ttl/3, 100*time.Millisecond), 2*time.Second)}
	for {
		if !sleepCtx(l.c.closeCtx, b.next()) {
			return
		}
		ctx, cancel := context.WithTimeout(l.c.closeCtx, l.releaseBound())
		err := l.held.Release(ctx)
		cancel()
		if err == nil || errors.Is(err, ErrLockLost) || l.c.closeCtx.Err() != nil {
			return
		}
	}
}

// scheduleRenewal arranges for the next renewal to start at at.
func (l *Lease) scheduleRenewal(at time.Time) {
	if g := l.c.grid; g != nil {
		g.schedule(l, at)
		return
	}
	l.renewT.Reset(time.Until(at))
}

func (l *Lease) stopTimers() {
	if g := l.c.grid; g != nil {
		g.unschedule(l)
	} else {
		l.renewT.Stop()
	}
	l.deadlineT.Stop()
	if l.maxHoldT != nil {
		l.maxHoldT.Stop()
	}
}

// loseAndRelease declares the loss and then gives the lock back if, against
// the odds, the engine still holds it for us (the loss was declared on the
// clock): the release is owner-checked, so it never touches another holder's
// lock. It waits out a renewal in flight, so renew, which is one, does not
// call it.
func (l *Lease) loseAndRelease(why lossReason, cause error) {
	ended, slot := l.finish(stateLost, cause)
	if ended {
		t := l.c.tel
		if t.log != nil {
			t.log.Warn("dlock: lease lost", "dlock.lock.name", l.name, "dlock.token", l.token,
				"dlock.reason", lossNames[why], "error", cause)
		}
		if t.metering() {
			t.losses.Add(context.Background(), 1, t.loss[l.prim][why]...)
		}
	}
	if !ended || !slot {
		return // someone else ended it, or Close releases it
	}
	defer l.c.calls.Done()
	_ = l.release(l.c.closeCtx, true) // lost already: the outcome changes nothing for the holder
}

func (l *Lease) deadlinePassed() {
	l.mu.Lock()
	last := l.renewFail
	l.mu.Unlock()
	if last == nil {
		l.loseAndRelease(lossDeadline, fmt.Errorf("%w: no successful renewal before the safety deadline (the last renewal had not answered)", ErrLockLost))
		return
	}
	l.loseAndRelease(lossDeadline, fmt.Errorf("%w: no successful renewal before the safety deadline (last error: %w)", ErrLockLost, last))
}

// margin is the safety margin for a validity window: the configured one,
// scaled down when the engine granted a shorter TTL than was asked (a
// ZooKeeper session timeout), so that it keeps its share of the window.
func (l *Lease) margin(v driver.Validity) time.Duration {
	if v.TTL < l.cfg.ttl {
		return time.Duration(float64(l.cfg.margin) * float64(v.TTL) / float64(l.cfg.ttl))
	}
	return l.cfg.margin
}

// intervalFor is the renew interval for the validity v: the configured one,
// unless the engine granted a shorter TTL than was asked (a ZooKeeper
// session timeout capped by the server, Redlock's drift allowance); then at
// most half of the window before the deadline, so that a renewal that fails
// once still leaves time for another. It follows each renewal's validity.
func (l *Lease) intervalFor(v driver.Validity) time.Duration {
	if v.TTL >= l.cfg.ttl {
		return l.cfg.renew
	}
	return max(min(l.cfg.renew, (v.TTL-l.margin(v))/2), MinRenewInterval)
}

func (l *Lease) deadlineOf(v driver.Validity) time.Time {
	return v.Since.Add(v.TTL - l.margin(v))
}

// renewAt is when to renew a lock of validity v: one renewal interval after
// its start, or, for a driver that coalesces renewals, the last point
// before that on a grid of a quarter of the interval that every lease with
// that interval shares (up to a quarter early, never before v.Since), so
// that the renewals of many leases come together.
func (l *Lease) renewAt(v driver.Validity) time.Time {
	iv := l.intervalFor(v)
	at := v.Since.Add(iv)
	if !l.c.coalesce {
		return at
	}
	if g := iv / 4; g > 0 {
		// Truncate drops the monotonic reading; step back by the same amount
		// on at itself to keep it.
		if t := at.Add(-at.Sub(at.Truncate(g))); t.After(v.Since) {
			return t
		}
	}
	return at
}

// engineLost is the driver's call when it learns the lock is gone
// (driver.LossNotifier); it must return at once.
func (l *Lease) engineLost() {
	if l.c.begin() != nil {
		return // Close is ending every lease
	}
	go func() {
		defer l.c.calls.Done()
		l.loseAndRelease(lossEngine, fmt.Errorf("%w: the engine reports the lock gone", ErrLockLost))
	}()
}

// watchLost waits for the driver to report the lock gone.
func (l *Lease) watchLost(lost <-chan struct{}) {
	defer l.c.calls.Done()
	select {
	case <-lost:
		l.loseAndRelease(lossEngine, fmt.Errorf("%w: the engine reports the lock gone", ErrLockLost))
	case <-l.ctx.Done():
	}
}

// renew runs on the renewal timer.
func (l *Lease) renew() {
	if l.c.begin() != nil {
		return // Close is ending every lease
	}
	l.renewMu.Lock()
	dl := l.deadlineOf(l.v)
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		l.renewMu.Unlock()
		l.c.calls.Done()
		return
	}
	rctx, cut := context.WithDeadline(context.Background(), dl)
	l.cutRenewal = cut
	l.mu.Unlock()
	cancel := func() {
		cut()
		l.mu.Lock()
		l.cutRenewal = nil
		l.mu.Unlock()
	}
	if ar, ok := l.held.(driver.AsyncRenewer); ok {
		l.renewAsync(ar, rctx, cancel, dl)
		return
	}
	nv, err := l.held.Renew(rctx)
	cancel()
	lost := l.settleRenewal(nv, err, dl)
	l.renewMu.Unlock()
	if lost != nil {
		l.loseAndRelease(lossRenewal, lost)
	}
	l.c.calls.Done()
}

// renewAsync renews through the driver's AsyncRenewer: no goroutine waits
// for the engine. The renewal holds renewMu and its c.calls slot until it
// is settled, by the driver's answer or by rctx's end (the lease's end
// cuts it short, as it does a Renew), whichever comes first.
func (l *Lease) renewAsync(ar driver.AsyncRenewer, rctx context.Context, cancel func(), dl time.Time) {
	var settled atomic.Bool
	settle := func(nv driver.Validity, err error) {
		if !settled.CompareAndSwap(false, true) {
			return
		}
		cancel()
		lost := l.settleRenewal(nv, err, dl)
		l.renewMu.Unlock()
		if lost != nil {
			go func() { // done must return at once
				defer l.c.calls.Done()
				l.loseAndRelease(lossRenewal, lost)
			}()
			return
		}
		l.c.calls.Done()
	}
	stopWaiting := context.AfterFunc(rctx, func() {
		settle(driver.Validity{}, rctx.Err())
	})
	ar.RenewAsync(rctx, func(nv driver.Validity, err error) {
		// Unregistered first: settle's cancel would otherwise start the
		// AfterFunc's goroutine, one per renewal, only to find it settled.
		stopWaiting()
		settle(nv, err)
	})
}

// settleRenewal records a renewal's outcome and rearms the timers; it
// returns the cause if the engine reports the lock gone. renewMu is held.
func (l *Lease) settleRenewal(nv driver.Validity, err error, dl time.Time) (lost error) {
	switch {
	case l.ctx.Err() != nil:
		// The lease ended meanwhile.
	case err == nil:
		l.renewed(renewOK, nil)
		if !nv.Since.IsZero() && nv.TTL > 0 {
			l.v = nv
		}
		l.mu.Lock()
		l.renewFail = nil
		l.mu.Unlock()
		l.deadlineT.Reset(time.Until(l.deadlineOf(l.v))) // if it fired already, the lease stays lost
		l.scheduleRenewal(l.renewAt(l.v))
	case errors.Is(err, ErrLockLost):
		l.renewed(renewLost, nil)
		return fmt.Errorf("renewal found it gone: %w", err) // err matches ErrLockLost
	default:
		l.renewed(renewError, err)
		l.mu.Lock()
		if l.renewFail == nil {
			l.renewFail = err
		}
		l.mu.Unlock()
		// Retry soon, but leave the engine room to recover.
		l.scheduleRenewal(time.Now().Add(min(l.intervalFor(l.v)/4, max(time.Until(dl)/2, time.Millisecond))))
	}
	return nil
}

// renewed records a renewal's outcome, and logs a failed one.
func (l *Lease) renewed(out renewOutcome, err error) {
	t := l.c.tel
	if t.metering() {
		t.renewals.Add(context.Background(), 1, t.renew[l.prim][out]...)
	}
	if err != nil && t.log != nil {
		t.log.Warn("dlock: renewal failed", "dlock.lock.name", l.name, "dlock.token", l.token,
			"deadline_in", time.Until(l.deadlineOf(l.v)).Round(time.Millisecond), "error", err)
	}
}
