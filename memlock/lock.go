package memlock

import (
	"context"
	"slices"
	"time"

	"github.com/dlockio/dlock/driver"
)

// hold is a granted lock, the driver.Lock of this driver.
type hold struct {
	e      *Engine
	c      *conn
	name   string
	mode   driver.Mode
	value  string // e.mu
	token  uint64
	expiry *time.Timer
	ttl    time.Duration
	until  time.Time     // when expiry fires; e.mu
	lost   chan struct{} // closed when the engine drops the hold (expiry, Drop)
	onLost func()        // the portable layer's call on loss; e.mu
	gone   bool          // dropped by the engine; e.mu
}

func (h *hold) Token() uint64 { return h.token }

func (h *hold) Lost() <-chan struct{} { return h.lost }

// NotifyLost implements driver.LossNotifier: a held lock costs no
// goroutine.
func (h *hold) NotifyLost(f func()) {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if h.gone {
		f()
		return
	}
	h.onLost = f
}

// markLost tells the holder the engine dropped its lock; e.mu held.
func (h *hold) markLost() {
	h.gone = true
	close(h.lost)
	if h.onLost != nil {
		h.onLost()
	}
}

// owned reports whether h still holds its lock; e.mu held.
func (h *hold) owned() bool {
	ent := h.e.locks[h.name]
	return ent != nil && slices.Contains(ent.holders, h)
}

func (h *hold) Renew(ctx context.Context) (driver.Validity, error) {
	since := time.Now()
	if err := h.c.check(); err != nil {
		return driver.Validity{}, err
	}
	if err := ctx.Err(); err != nil {
		return driver.Validity{}, err
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if !h.owned() {
		return driver.Validity{}, driver.ErrLockLost
	}
	h.expiry.Reset(h.ttl)
	h.until = time.Now().Add(h.ttl)
	return driver.Validity{Since: since, TTL: h.ttl}, nil
}

func (h *hold) Release(ctx context.Context) error {
	if err := h.c.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if !h.owned() {
		return driver.ErrLockLost
	}
	h.expiry.Stop()
	ent := h.e.locks[h.name]
	ent.remove(h)
	h.e.grantWaiting(h.name, ent)
	h.e.notify(h.name)
	return nil
}

// SetValue replaces the value kept with the lock, if h still holds it.
func (h *hold) SetValue(ctx context.Context, value string) error {
	if err := h.c.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if !h.owned() {
		return driver.ErrLockLost
	}
	h.value = value
	h.e.notify(h.name)
	return nil
}
