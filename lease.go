package dlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	c     *Client
	name  string
	token uint64
	held  driver.Lock
	cfg   config

	ctx    context.Context // cancelled on loss or end
	cancel context.CancelCauseFunc

	stopCtx  context.Context // cancelled to stop the watchdog and its calls
	stop     context.CancelFunc
	wdDone   chan struct{} // closed when the watchdog has returned
	deadline *time.Timer   // declares the lease lost when renewals fail

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

func (c *Client) startLease(name string, cfg config, held driver.Lock, v driver.Validity) (*Lease, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	stopCtx, stop := context.WithCancel(context.Background())
	l := &Lease{
		c: c, name: name, token: held.Token(), held: held, cfg: cfg,
		ctx: ctx, cancel: cancel, stopCtx: stopCtx, stop: stop,
		wdDone: make(chan struct{}),
	}
	l.deadline = time.AfterFunc(time.Until(l.deadlineOf(v)), func() {
		l.mu.Lock()
		last := l.renewFail
		l.mu.Unlock()
		l.lose(fmt.Errorf("%w: no successful renewal before the safety deadline (TTL - margin %v): %v",
			ErrLockLost, cfg.margin, last))
	})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		l.deadline.Stop()
		stop()
		cancel(ErrClosed)
		rctx, rcancel := context.WithTimeout(context.Background(), cfg.ttl)
		defer rcancel()
		return nil, errors.Join(wrap(name, "lock", ErrClosed), wrap(name, "release", held.Release(rctx)))
	}
	c.leases[l] = struct{}{}
	c.calls.Add(1) // the watchdog
	c.mu.Unlock()
	go l.watch(v)
	return l, nil
}

// Name returns the lock's name.
func (l *Lease) Name() string { return l.name }

// Token returns the fencing token: for one lock name it strictly increases in
// the order the engine granted the lock. How strongly depends on the driver
// (Client.Capabilities).
func (l *Lease) Token() uint64 { return l.token }

// Done returns a channel that is closed when the lease ends: lost, unlocked,
// or its client closed.
func (l *Lease) Done() <-chan struct{} { return l.ctx.Done() }

// Context returns a context that is cancelled when the lease ends.
// context.Cause tells why.
func (l *Lease) Context() context.Context { return l.ctx }

// Err returns nil while the lease is held; after it ends, an error matching
// ErrLockLost (lost), ErrNotHeld (unlocked) or ErrClosed (client closed).
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Unlock releases the lock if the engine still holds it for this lease. It
// returns an error matching ErrLockLost if the lease was lost (the engine is
// left unchanged: another holder's lock is never touched), ErrNotHeld if it
// was already released, or the engine's error if the release failed; in that
// last case the lease has ended all the same and the engine drops the lock
// when its TTL runs out.
func (l *Lease) Unlock(ctx context.Context) error {
	if ctx == nil {
		return wrap(l.name, "unlock", invalid("ctx", nil, "a non-nil context.Context"))
	}
	return l.end(ctx, ErrNotHeld)
}

// end stops renewal and releases the lock, leaving Err = reason.
func (l *Lease) end(ctx context.Context, reason error) error {
	l.mu.Lock()
	if l.state != stateHeld {
		err := l.err
		l.mu.Unlock()
		return err
	}
	l.state = stateEnded
	l.err = fmt.Errorf("lock %q: %w", l.name, reason)
	l.mu.Unlock()

	l.stop()
	<-l.wdDone
	l.deadline.Stop()
	err := l.held.Release(ctx)
	l.cancel(l.err)
	l.c.track(l, false)
	if errors.Is(err, ErrLockLost) {
		lost := fmt.Errorf("lock %q: %w: the engine no longer held it at release", l.name, ErrLockLost)
		l.mu.Lock()
		l.err = lost
		l.mu.Unlock()
		return lost
	}
	return wrap(l.name, "release", err)
}

// lose ends a held lease as lost; it is a no-op once the lease has ended.
func (l *Lease) lose(cause error) {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		return
	}
	l.state = stateLost
	l.err = fmt.Errorf("lock %q: %w", l.name, cause)
	l.mu.Unlock()
	l.cancel(l.err)
}

func (l *Lease) deadlineOf(v driver.Validity) time.Time {
	return v.Since.Add(v.TTL - l.cfg.margin)
}

// watch renews the lease until it ends, and declares it lost when the engine
// says so or the maximum hold time runs out. The safety deadline is a
// separate timer so that a renewal stuck on the network cannot delay it.
func (l *Lease) watch(v driver.Validity) {
	defer l.c.calls.Done()
	defer close(l.wdDone)

	interval := l.cfg.renew
	if usable := v.TTL - l.cfg.margin; interval >= usable {
		interval = usable / 3 // the engine granted a shorter TTL than asked
	}
	renew := time.NewTimer(time.Until(v.Since.Add(interval)))
	defer renew.Stop()
	var maxHold <-chan time.Time
	if l.cfg.maxHold > 0 {
		t := time.NewTimer(l.cfg.maxHold)
		defer t.Stop()
		maxHold = t.C
	}
	lost := l.held.Lost()

	for {
		select {
		case <-l.stopCtx.Done(): // Unlock or Close
			return
		case <-l.ctx.Done(): // lost on the clock
			l.releaseAfterLoss()
			return
		case <-lost:
			l.lose(fmt.Errorf("%w: the engine reports the lock gone", ErrLockLost))
			l.releaseAfterLoss()
			return
		case <-maxHold:
			l.lose(fmt.Errorf("%w: maximum hold time %v reached", ErrLockLost, l.cfg.maxHold))
			l.releaseAfterLoss()
			return
		case <-renew.C:
		}
		dl := l.deadlineOf(v)
		rctx, rcancel := context.WithDeadline(l.stopCtx, dl)
		nv, err := l.held.Renew(rctx)
		rcancel()
		switch {
		case err == nil:
			if !nv.Since.IsZero() && nv.TTL > 0 {
				v = nv
			}
			l.mu.Lock()
			l.renewFail = nil
			l.mu.Unlock()
			l.deadline.Reset(time.Until(l.deadlineOf(v))) // if it already fired, the lease stays lost
			renew.Reset(time.Until(v.Since.Add(interval)))
		case errors.Is(err, ErrLockLost):
			l.lose(fmt.Errorf("%w: renewal found it gone: %v", ErrLockLost, err))
			l.releaseAfterLoss()
			return
		case l.stopCtx.Err() != nil:
			return
		default:
			l.mu.Lock()
			if l.renewFail == nil {
				l.renewFail = err
			}
			l.mu.Unlock()
			// Retry soon, but leave the engine room to recover.
			renew.Reset(min(interval/4, max(time.Until(dl)/2, time.Millisecond)))
		}
	}
}

// releaseAfterLoss gives the lock back if, against the odds, the engine still
// holds it for us (the loss was declared on the clock): the release is
// owner-checked, so it never touches another holder's lock.
func (l *Lease) releaseAfterLoss() {
	l.deadline.Stop()
	l.c.track(l, false)
	ctx, cancel := context.WithTimeout(l.stopCtx, min(l.cfg.ttl, 5*time.Second))
	defer cancel()
	_ = l.held.Release(ctx) // the lease is already lost; the result changes nothing for the holder
}
