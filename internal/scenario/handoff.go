package scenario

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// HandoffConfig says how a handoff round waits before the holder releases.
type HandoffConfig struct {
	// The holder keeps the lock a random time in [HoldMin, HoldMax] once
	// the waiter is queued: the waiter needs time to park, and with a
	// random hold a polling waiter's phase is random too.
	HoldMin, HoldMax time.Duration
	// Queued, if set, reports whether the waiter is queued in the engine;
	// the holder polls it before its hold begins.
	Queued func(ctx context.Context) (bool, error)
}

// Handoff passes one lock back and forth between two workers: a holder
// releases while the other waits in Lock.
type Handoff struct {
	holder, waiter Locker
	name           string
	cfg            HandoffConfig
	// Overlaps counts the rounds whose waiter was granted the lock before
	// the holder released it: a broken lock, not a fast one.
	Overlaps int
}

// NewHandoff returns a handoff of name between a and b, a holding first.
func NewHandoff(a, b Locker, name string, cfg HandoffConfig) *Handoff {
	return &Handoff{holder: a, waiter: b, name: name, cfg: cfg}
}

// Round runs one handoff and returns its latency: from just before the
// release call (so the release round trip counts) to the waiter's Lock
// returning. The two workers then swap roles.
func (h *Handoff) Round(ctx context.Context) (time.Duration, error) {
	held, err := h.holder.Lock(ctx, h.name)
	if err != nil {
		return 0, err
	}
	type grant struct {
		at   time.Time
		held Held
		err  error
	}
	got := make(chan grant, 1)
	go func() {
		w, err := h.waiter.Lock(ctx, h.name)
		got <- grant{time.Now(), w, err}
	}()
	if h.cfg.Queued != nil {
		for {
			ok, err := h.cfg.Queued(ctx)
			if err != nil {
				return 0, fmt.Errorf("is the waiter queued: %w", err)
			}
			if ok {
				break
			}
			time.Sleep(200 * time.Microsecond) // no event says the waiter is queued
		}
	}
	hold := h.cfg.HoldMin
	if h.cfg.HoldMax > h.cfg.HoldMin {
		hold += rand.N(h.cfg.HoldMax - h.cfg.HoldMin)
	}
	time.Sleep(hold)
	t0 := time.Now()
	if err := held.Unlock(ctx); err != nil {
		return 0, err
	}
	g := <-got
	if g.err != nil {
		return 0, g.err
	}
	if g.at.Before(t0) {
		h.Overlaps++
	}
	if err := g.held.Unlock(ctx); err != nil {
		return 0, err
	}
	h.holder, h.waiter = h.waiter, h.holder
	return g.at.Sub(t0), nil
}

// Run runs rounds until b's count is reached or its time is up, and
// returns their latencies. With Overlaps, the figures stand but the error
// is a Partial that says so.
func (h *Handoff) Run(ctx context.Context, b Budget) ([]time.Duration, error) {
	if b.Max > 0 {
		// A round that hangs (a waiter never woken) fails the run soon
		// after its budget rather than at the caller's deadline.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.Max+5*time.Second)
		defer cancel()
	}
	var lat []time.Duration
	start := time.Now()
	for b.more(len(lat), start) {
		d, err := h.Round(ctx)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	if len(lat) == 0 {
		return nil, errNoHandoff
	}
	if h.Overlaps > 0 {
		return lat, Partial{fmt.Errorf("%d of %d waiters were granted the lock before the holder released it", h.Overlaps, len(lat))}
	}
	return lat, nil
}
