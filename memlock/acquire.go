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
	e.mu.Lock()
	ent := e.locks[req.Name]
	if ent == nil {
		ent = &entry{}
		e.locks[req.Name] = ent
	}
	if ent.holder == nil && len(ent.queue) == 0 {
		h := e.grant(req.Name, ent, c, req.TTL)
		e.mu.Unlock()
		return h, driver.Validity{Since: since, TTL: req.TTL}, nil
	}
	if !req.Wait {
		e.mu.Unlock()
		return nil, driver.Validity{}, driver.ErrNotAcquired
	}
	w := &waiter{c: c, ttl: req.TTL, ready: make(chan *hold, 1)}
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
		if ent.holder == nil && len(ent.queue) == 0 {
			delete(e.locks, req.Name)
		}
		e.mu.Unlock()
		return nil, driver.Validity{}, ctx.Err()
	}
	e.mu.Unlock()
	h := <-w.ready // granted as we gave up: hand it on
	_ = h.Release(context.Background())
	return nil, driver.Validity{}, ctx.Err()
}
