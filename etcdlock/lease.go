package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// lease is an etcd lease shared by all of a driver's keys that asked for the
// same TTL.
type lease struct {
	d   *Driver
	key int64 // TTL asked for, in seconds: the driver's map key
	id  clientv3.LeaseID
	ttl time.Duration // as granted by the server

	mu       sync.Mutex
	lastSent time.Time // send time of the grant or of the last successful keep-alive
	dead     bool      // the server no longer knows the lease
	inflight *keepAliveCall
}

// keepAliveCall is a keep-alive in flight and the callers waiting for it.
type keepAliveCall struct {
	waiters []func(driver.Validity, error) // called once each with its outcome
}

// leaseFor returns the driver's lease for a TTL of secs seconds, granting one
// if there is none or the last one died, and refreshing it first if less
// than half its TTL is known to be left, so that a new lock starts with a
// useful validity.
func (d *Driver) leaseFor(ctx context.Context, secs int64) (*lease, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errClosed
	}
	ls := d.leases[secs]
	d.mu.Unlock()
	if ls != nil {
		left, dead := ls.left()
		if !dead && left > ls.ttl/2 {
			return ls, nil
		}
		if !dead && left > 0 {
			_, err := ls.keepAlive(ctx)
			if err == nil {
				return ls, nil
			}
			if !errors.Is(err, driver.ErrLockLost) {
				return nil, err
			}
		}
		ls.markDead()
	}

	select { // one grant at a time, so concurrent first locks share it
	case d.grant <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-d.grant }()
	d.mu.Lock()
	cur := d.leases[secs]
	d.mu.Unlock()
	if cur != nil && cur != ls {
		if left, dead := cur.left(); !dead && left > 0 {
			return cur, nil // granted while we waited for the turn
		}
	}
	sent := time.Now()
	gctx, cancel := context.WithTimeout(ctx, grantTimeout)
	resp, err := d.cli.Grant(gctx, secs)
	cancel()
	if err != nil {
		if ctx.Err() == nil && gctx.Err() != nil {
			err = fmt.Errorf("no answer within %v: %w", grantTimeout, err)
		}
		return nil, fmt.Errorf("etcdlock: grant lease: %w", d.engineErr(ctx, err))
	}
	nl := &lease{d: d, key: secs, id: resp.ID, ttl: time.Duration(resp.TTL) * time.Second, lastSent: sent}
	d.forgetExpired()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		rctx, cancel := driver.CleanupContext(ctx)
		defer cancel()
		_, _ = d.cli.Revoke(rctx, resp.ID) // best effort: nothing renews it, it expires
		return nil, errClosed
	}
	d.leases[secs] = nl
	d.all[nl] = struct{}{}
	d.mu.Unlock()
	return nl, nil
}

// forgetExpired drops from d.all the leases that must have expired by now
// (nothing refreshed them for a whole TTL past their end), so that a driver
// that retires many leases does not keep them all until Close.
func (d *Driver) forgetExpired() {
	d.mu.Lock()
	leases := make([]*lease, 0, len(d.all))
	for l := range d.all {
		leases = append(leases, l)
	}
	d.mu.Unlock()
	for _, l := range leases {
		if left, dead := l.left(); dead || left < -l.ttl {
			l.markDead()
		}
	}
}

// left is how much of the lease is known to remain, on our clock.
func (l *lease) left() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Until(l.lastSent.Add(l.ttl)), l.dead
}

func (l *lease) validity() driver.Validity {
	l.mu.Lock()
	defer l.mu.Unlock()
	return driver.Validity{Since: l.lastSent, TTL: l.ttl}
}

// markDead forgets the lease, so the next Acquire grants a new one.
func (l *lease) markDead() {
	l.mu.Lock()
	l.dead = true
	l.mu.Unlock()
	l.d.mu.Lock()
	if l.d.leases[l.key] == l {
		delete(l.d.leases, l.key)
	}
	delete(l.d.all, l)
	l.d.mu.Unlock()
}

// keepAlive refreshes the lease once (keepAliveAsync) and waits for the
// outcome, or for ctx's end.
func (l *lease) keepAlive(ctx context.Context) (driver.Validity, error) {
	type result struct {
		v   driver.Validity
		err error
	}
	ch := make(chan result, 1)
	l.keepAliveAsync(func(v driver.Validity, err error) { ch <- result{v, err} })
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return driver.Validity{}, ctx.Err()
	}
}

// keepAliveAsync refreshes the lease once and calls done with the
// outcome: in the goroutine that sends the refresh, or before it returns
// if the driver is closed. Calls made while a refresh is in flight share
// it: its send time is no later than theirs, so its validity holds for
// them too. The refresh runs on a context of its own, bounded by the TTL
// and the driver's life (so done is called within a TTL, and at once when
// the driver closes), whatever becomes of the callers.
func (l *lease) keepAliveAsync(done func(driver.Validity, error)) {
	l.mu.Lock()
	c := l.inflight
	if c == nil {
		c = &keepAliveCall{}
		l.d.mu.Lock()
		if l.d.closed {
			l.d.mu.Unlock()
			l.mu.Unlock()
			done(driver.Validity{}, errClosed)
			return
		}
		l.d.wg.Add(1)
		l.d.mu.Unlock()
		l.inflight = c
		go l.refresh(c)
	}
	c.waiters = append(c.waiters, done)
	l.mu.Unlock()
}

func (l *lease) refresh(c *keepAliveCall) {
	defer l.d.wg.Done()
	ctx, cancel := context.WithTimeout(l.d.closeCtx, l.ttl)
	defer cancel()
	sent := time.Now()
	var resp *clientv3.LeaseKeepAliveResponse
	err := errClientClosed // clientv3 would retry on a closed client until ctx ends
	if l.d.cli.Ctx().Err() == nil {
		resp, err = l.d.cli.KeepAliveOnce(ctx, l.id)
	}
	var v driver.Validity
	l.mu.Lock()
	switch {
	case err == nil:
		if sent.After(l.lastSent) {
			l.lastSent = sent
		}
		v = driver.Validity{Since: sent, TTL: time.Duration(resp.TTL) * time.Second}
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		l.dead = true
		err = fmt.Errorf("%w: etcd lease %x expired", driver.ErrLockLost, int64(l.id))
	default:
		err = fmt.Errorf("etcdlock: keep-alive of lease %x: %w", int64(l.id), err)
	}
	l.inflight = nil // no caller joins c any more
	waiters := c.waiters
	l.mu.Unlock()
	// The renewals among the waiters enqueue their owner checks: one batch.
	release := l.d.checks.hold()
	defer release()
	for _, done := range waiters {
		done(v, err)
	}
}
