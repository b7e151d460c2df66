package memlock

import (
	"context"
	"slices"
	"time"

	"github.com/dlockio/dlock/driver"
)

func (c *conn) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	since := time.Now()
	if err := c.check(); err != nil {
		return nil, driver.Validity{}, err
	}
	e := c.e
	if req.Mode != driver.Exclusive && (req.Mode != driver.Shared || req.Limit > 0) {
		return nil, driver.Validity{}, driver.InvalidArgument("Mode", req.Mode, "Exclusive, or Shared without a Limit")
	}
	if req.Value != "" && (req.Mode != driver.Exclusive || req.Limit > 0) {
		return nil, driver.Validity{}, driver.InvalidArgument("Value", "non-empty", "no Value with Shared or a Limit (a value is an exclusive holder's)")
	}
	if req.Limit < 0 {
		return nil, driver.Validity{}, driver.InvalidArgument("Limit", req.Limit, "0 (a lock) or a number of permits >= 1")
	}
	e.mu.Lock()
	ent, err := e.entryFor(req.Name, req.Limit)
	if err != nil {
		e.mu.Unlock()
		return nil, driver.Validity{}, err
	}
	w := &waiter{c: c, mode: req.Mode, value: req.Value, ttl: req.TTL, ready: make(chan *hold, 1)}
	if len(ent.queue) == 0 && ent.admits(req.Mode) {
		h := e.grant(req.Name, ent, w)
		e.mu.Unlock()
		return h, driver.Validity{Since: since, TTL: req.TTL}, nil
	}
	if !req.Wait {
		if len(ent.holders) == 0 && len(ent.queue) == 0 {
			delete(e.locks, req.Name)
		}
		e.mu.Unlock()
		return nil, driver.Validity{}, driver.ErrNotAcquired
	}
	ent.queue = append(ent.queue, w)
	e.mu.Unlock()

	select {
	case h := <-w.ready:
		if err := c.check(); err != nil {
			return nil, driver.Validity{}, err // a dead client's grant just expires
		}
		// The engine's clock for this hold started at the grant, in the
		// releaser's goroutine, not now that we woke up.
		return h, driver.Validity{Since: h.until.Add(-h.ttl), TTL: req.TTL}, nil
	case <-ctx.Done():
	}
	e.mu.Lock()
	if i := slices.Index(ent.queue, w); i >= 0 {
		ent.queue = slices.Delete(ent.queue, i, i+1)
		// A reader queued behind this waiter may be admitted now.
		e.grantWaiting(req.Name, ent)
		e.mu.Unlock()
		return nil, driver.Validity{}, ctx.Err()
	}
	e.mu.Unlock()
	h := <-w.ready // granted as we gave up: hand it on
	_ = h.Release(context.Background())
	return nil, driver.Validity{}, ctx.Err()
}
