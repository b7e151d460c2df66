package dlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Mutex is a named mutual-exclusion lock on a client's engine. It is cheap:
// make one per name and use it from any goroutine. A Mutex holds nothing by
// itself; each successful Lock returns a separate *Lease.
type Mutex struct {
	c    *Client
	name string
	cfg  config
}

// Name returns the lock's name.
func (m *Mutex) Name() string { return m.name }

// Lock waits until the lock is granted, ctx is done or the client is closed
// (ErrClosed). While the engine is unavailable (errors matching
// ErrUnavailable: a refused or lost connection, no quorum) it keeps trying,
// with capped, jittered backoff (RetryMaxBackoff at most between tries); if
// ctx ends first it returns ctx's error, joined with the last engine error
// if there was one (errors.Is matches both). Any other engine error is
// returned at once. A Lock that returns an error holds nothing and leaves
// nothing queued on the engine, with one exception: a grant it had to give
// back (below, or at Close) whose release failed may stay held on the engine
// until its TTL runs out, and the error says so (it matches the release's
// error too). A grant whose TTL had run out by the time
// it arrived (a slow engine, or the waiter's session expired while it
// waited) is renewed once; if the engine does not confirm it is still
// ours, it is given back and asked for again: a returned lease is always
// within its validity.
func (m *Mutex) Lock(ctx context.Context) (*Lease, error) { return m.acquire(ctx, true) }

// TryLock makes one attempt and returns an error matching ErrNotAcquired at
// once if someone else holds the lock, or the engine's error (matching
// ErrUnavailable if it may pass) if the engine could not answer, or
// ErrLockLost if the grant's TTL had run out by the time it arrived and a
// renewal could not prove it still ours.
func (m *Mutex) TryLock(ctx context.Context) (*Lease, error) { return m.acquire(ctx, false) }

// RetryMaxBackoff is the longest pause of a blocking Lock between tries
// while the engine is unavailable.
const RetryMaxBackoff = time.Second

func (m *Mutex) acquire(ctx context.Context, wait bool) (*Lease, error) {
	op := "lock"
	if !wait {
		op = "trylock"
	}
	return m.c.acquire(ctx, primMutex, m.name, m.cfg, op, driver.Request{Wait: wait})
}

// acquire takes what req asks for (its Name and TTL are filled in here)
// through the driver, riding out an unavailable engine if req.Wait, and
// starts the lease. op names the call in errors.
func (c *Client) acquire(ctx context.Context, prim primitive, name string, ccfg config, op string, req driver.Request) (lease *Lease, err error) {
	if ctx == nil {
		return nil, wrap(name, op, invalid("ctx", nil, "a non-nil context.Context"))
	}
	if name == "" {
		return nil, wrap(name, op, invalid("name", `""`, "a non-empty lock name (any bytes)"))
	}
	cfg, err := ccfg.resolved()
	if err != nil {
		return nil, wrap(name, op, err)
	}
	if req.Limit < 0 {
		return nil, wrap(name, op, invalid("n", req.Limit, "a number of permits >= 1"))
	}
	if err := c.supports(req); err != nil {
		return nil, wrap(name, op, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	req.Name, req.TTL = name, cfg.ttl
	return c.acquireChecked(ctx, prim, cfg, op, req)
}

// acquireChecked is acquire once the arguments are checked. Its defers are
// open-coded (a function with a loop and many returns gets heap-style
// defer records, a few percent of an in-process cycle): the loop and its
// returns are in take.
func (c *Client) acquireChecked(ctx context.Context, prim primitive, cfg config, op string, req driver.Request) (lease *Lease, err error) {
	if err := c.begin(); err != nil {
		return nil, wrap(req.Name, op, err)
	}
	defer c.calls.Done()
	ctx, rec := c.tel.acquireStarted(ctx, prim, op, req.Name, req.Wait)
	defer func() {
		var token uint64
		if lease != nil {
			token = lease.token
		}
		rec.end(outcomeOf(err, ctx), token, err)
	}()

	// The wait ends with ctx or with Close, whichever comes first.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.closeCtx, cancel)
	defer stop()
	return c.take(ctx, actx, prim, rec.metered, cfg, op, req)
}

// take asks the driver for req until it is granted, riding out an
// unavailable engine if req.Wait, and starts the lease. ctx is the
// caller's, actx the same ended by Close too.
func (c *Client) take(ctx, actx context.Context, prim primitive, metered bool, cfg config, op string, req driver.Request) (*Lease, error) {
	name, wait := req.Name, req.Wait
	var (
		held    driver.Lock
		v       driver.Validity
		start   time.Time
		err     error
		lastErr error // the last engine error a blocking Lock rode out
		b       = backoff{base: 20 * time.Millisecond, max: RetryMaxBackoff}
	)
	for {
		start = time.Now()
		held, v, err = c.drv.Acquire(actx, req)
		if err == nil {
			var fresh bool
			if v, fresh = c.fresh(actx, cfg, held, v, start); fresh {
				break
			}
			// The grant's validity ran out before it reached us and a
			// renewal could not prove the lock still ours (the waiter's
			// session or lease expired while it waited): give it back; a
			// blocking call asks again.
			rctx, rcancel := driver.CleanupContext(ctx)
			rerr := held.Release(rctx)
			rcancel()
			err = fmt.Errorf("%w: granted after its TTL had run out (validity from %v, %v)", ErrLockLost, v.Since.Format(time.RFC3339Nano), v.TTL)
			if rerr != nil && !errors.Is(rerr, ErrLockLost) {
				err = errors.Join(err, wrap(name, "release", rerr))
			}
			if !wait || ctx.Err() != nil || c.closeCtx.Err() != nil {
				return nil, wrap(name, op, err)
			}
			lastErr = err
			if sleepCtx(actx, b.next()) {
				continue
			}
			if ctx.Err() != nil {
				return nil, errors.Join(ctx.Err(), wrap(name, op, lastErr))
			}
			return nil, wrap(name, op, ErrClosed)
		}
		if c.closeCtx.Err() != nil && ctx.Err() == nil {
			return nil, wrap(name, op, ErrClosed)
		}
		if wait && errors.Is(err, ErrUnavailable) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err // the engine's own failure, even if ctx ended meanwhile
		}
		if ctx.Err() == nil && wait && errors.Is(err, ErrUnavailable) {
			if sleepCtx(actx, b.next()) {
				continue
			}
			if ctx.Err() == nil {
				return nil, wrap(name, op, ErrClosed)
			}
		}
		if ctx.Err() != nil {
			if lastErr != nil {
				return nil, errors.Join(ctx.Err(), wrap(name, op, lastErr))
			}
			return nil, ctx.Err() // as itself, not wrapped
		}
		return nil, wrap(name, op, err) // an engine failure, even a driver's own timeout
	}
	if ctx.Err() != nil || c.closeCtx.Err() != nil {
		// Granted as the caller gave up: give it back rather than return a
		// lock the caller is not expecting.
		rctx, rcancel := context.WithTimeout(context.Background(), min(cfg.ttl, CloseTimeout))
		rerr := held.Release(rctx)
		rcancel()
		if ctx.Err() != nil {
			return nil, errors.Join(ctx.Err(), wrap(name, "release", rerr))
		}
		return nil, errors.Join(wrap(name, op, ErrClosed), wrap(name, "release", rerr))
	}
	return c.startLease(prim, metered, name, cfg, held, v)
}

// fresh fills in a grant's validity and reports whether it is still
// running. If it ran out before the grant reached us (a slow engine, a
// waiter's session that expired while it waited), one renewal may prove
// the lock still ours: renewals are owner-checked, and an engine never
// gives back a lock it dropped, so a successful one means we held it all
// along. Then the renewed validity counts.
func (c *Client) fresh(ctx context.Context, cfg config, held driver.Lock, v driver.Validity, start time.Time) (driver.Validity, bool) {
	// A driver that says nothing (a zero Validity) promises the TTL asked
	// from just before the call; one that gives a Since and no TTL left
	// (TTL <= 0) promises nothing, and must not be read as a full TTL.
	fill := func(v driver.Validity, since time.Time) driver.Validity {
		if v.Since.IsZero() {
			v.Since = since
			if v.TTL == 0 {
				v.TTL = cfg.ttl
			}
		}
		return v
	}
	l := &Lease{cfg: cfg}
	v = fill(v, start)
	if time.Now().Before(l.deadlineOf(v)) {
		return v, true
	}
	rctx, cancel := context.WithTimeout(ctx, min(cfg.ttl, CloseTimeout))
	defer cancel()
	since := time.Now()
	nv, err := held.Renew(rctx)
	if err != nil {
		return v, false
	}
	nv = fill(nv, since)
	return nv, time.Now().Before(l.deadlineOf(nv))
}

// supports refuses, with ErrNotSupported, a request for a primitive the
// driver does not say it offers. A plain mutex request needs no
// Capabilities, which some drivers build on each call (zklock formats its
// session notes): the hot path skips them.
func (c *Client) supports(req driver.Request) error {
	if req.Mode == driver.Exclusive && req.Limit == 0 && req.Value == "" {
		return nil
	}
	caps := c.Capabilities()
	switch {
	case req.Mode == driver.Shared && !caps.Shared:
		return fmt.Errorf("%w: read-write locks (shared mode)", ErrNotSupported)
	case req.Limit > 0 && !caps.Semaphore:
		return fmt.Errorf("%w: semaphores", ErrNotSupported)
	case req.Value != "" && !caps.Election:
		return fmt.Errorf("%w: elections (a value kept with the lock)", ErrNotSupported)
	case req.Mode != driver.Exclusive && req.Mode != driver.Shared:
		return invalid("mode", req.Mode, "Exclusive or Shared")
	}
	return nil
}
