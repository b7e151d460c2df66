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
// next, how long a waiter can wait, and how fast the lock changes hands
// under contention. The mode is the waiter's: it travels in the waiter's
// owner id, so clients with different settings can share a lock, each of
// its waiters treated as its own client says.
type Fairness int

const (
	// DefaultFairness is the zero value: Barging, with
	// DefaultStarvationBound. In the peer benchmark's counter (bench/, 10
	// and 50 workers incrementing a counter under one lock; the project's
	// 2-core machine, shared and loaded; medians of same-run ratios over 5
	// interleaved runs, three such sets) Barging made 1.13-1.41x FIFO's
	// increments per second at both sizes, for a p99 wait of 0.75-2.7x
	// FIFO's, 0.29-0.78x that of bsm/redislock's polling peer (owner
	// changes: 32-42% of increments against FIFO's ~100%); the handoff
	// latency was FIFO's. Throughput is where
	// the driver was behind its peers, and waits stay bounded, so Barging
	// is the default, as it is Go's. Choose FIFO where queued waiters
	// must be served strictly in order with the shortest worst-case wait,
	// or where a free lock must never wait for its first waiter's bound.
	DefaultFairness Fairness = iota
	// FIFO: a release hands the lock straight to the first waiter in the
	// queue (in order of arrival), which holds it when the release's
	// message reaches it. Queued waiters are served in order, and a
	// waiter's wait is bounded by the holds of those queued before it; but
	// under contention the lock changes owner on every release, and every
	// hand-over puts a message and a wake-up on the path from one holder
	// to the next. (A free lock, which no release handed over, goes to the
	// first to ask, as in every mode.)
	FIFO
	// Barging, in the manner of Go's sync.Mutex: while the first waiter in
	// the queue has been there (at the head) for less than its
	// StarvationBound, a release frees the lock without handing it over
	// and, mostly, without waking anyone, and whoever asks first takes it
	// (often the client that just released it and locks again, which
	// saves the hand-over); the waiter keeps its place. Once it has been at
	// the head for its bound, a release hands it the lock as FIFO does; and
	// it tries by itself when its bound is up, so a lock that nobody takes
	// stays free at most that long. (A waiter that reaches the head behind
	// others learns when its bound is up from the first release that finds
	// it there: a message, not a wake-up to race for the lock.) So a
	// waiter waits, beyond the time the waiters queued before it take, at
	// most its bound plus one hold and a hand-over: with N queued before
	// it, about N x (bound + a hand-over). Readers and permits are handed
	// over as with FIFO.
	Barging
)

// DefaultStarvationBound is the StarvationBound of Barging when the option
// is zero: Go's sync.Mutex switches to hand-over after 1 ms too. In the
// counter benchmark 1 ms let a holder keep the lock for a few increments
// at a time. A longer bound lengthens every queued waiter's wait by about
// the bound per waiter ahead of it: 2 ms made 1.34x (10 workers) and 1.59x
// (50) FIFO's increments per second, with a p99 wait about bsm/redislock's
// (2.8x FIFO's).
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
const defaultFairness = Barging
