package redislock

import (
	"strconv"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Fairness is how a release on a single node passes a lock to the clients
// waiting for it (Options.Fairness). Safety is the same in every mode: the
// lock key is set by an owner-checked script, and tokens come from the fence
// counter in the order of the grants. What differs is who gets the lock
// next, and how fast the lock changes hands under contention.
type Fairness int

const (
	// DefaultFairness is the zero value: FIXME-DEFAULT.
	DefaultFairness Fairness = iota
	// FIFO: a release hands the lock straight to the first waiter in the
	// queue (in order of arrival), which holds it when the release's
	// message reaches it. Nobody can overtake a waiter, and a waiter's wait
	// is bounded by the holds of those queued before it; but under
	// contention the lock changes owner on every release, and every
	// hand-over costs a message and a wake-up on the path from one holder
	// to the next.
	FIFO
	// Barging, as Go's sync.Mutex: a release frees the lock and wakes the
	// first waiter, and whoever asks first takes it: the woken waiter, or
	// a caller that was not waiting (often the client that just released
	// it and locks again, saving the hand-over). A woken waiter that loses
	// keeps its place and is woken by the next release. Once the first
	// waiter has waited StarvationBound (since it queued), a release hands
	// it the lock as FIFO does, so no waiter waits more than the bound plus
	// one hold and a hand-over beyond the time it takes the waiters queued
	// before it to be served. Readers, permits and a writer's waiting
	// readers are handed over as with FIFO.
	Barging
)

// DefaultStarvationBound is the StarvationBound of Barging when the option
// is zero: FIXME-BOUND.
const DefaultStarvationBound = time.Millisecond

// String names f as in the documentation.
func (f Fairness) String() string {
	switch f {
	case DefaultFairness:
		return "DefaultFairness"
	case FIFO:
		return "FIFO"
	case Barging:
		return "Barging"
	}
	return "Fairness(" + strconv.Itoa(int(f)) + ")"
}

// bargeBound checks the fairness options and returns the barging bound in
// microseconds that release.lua takes, 0 for strict hand-over; fn names the
// caller in errors.
func bargeBound(fn string, f Fairness, bound time.Duration) (int64, error) {
	if bound < 0 {
		return 0, driver.InvalidArgument(fn+": Options.StarvationBound", bound, "a duration >= 0 (0: the default)")
	}
	if f == DefaultFairness {
		f = defaultFairness
	}
	switch f {
	case FIFO:
		return 0, nil
	case Barging:
		if bound == 0 {
			bound = DefaultStarvationBound
		}
		return max(bound.Microseconds(), 1), nil
	}
	return 0, driver.InvalidArgument(fn+": Options.Fairness", f, "DefaultFairness, FIFO or Barging")
}

// defaultFairness is what DefaultFairness means (see its comment).
const defaultFairness = FIFO
