// Package scenario holds the workloads that measure and demonstrate dlock,
// with the statistics they report: the shared counter (SharedCounter), the
// handoff from a holder to a waiter (Handoff), uncontended cycles
// (Uncontended), many names at once (ManyNames) and goroutines per held
// lock (Goroutines). `dlock demo`, `dlock bench`, the peer benchmarks
// (bench/, its own module) and drivertest.RunBenchmarks all run these, so a
// figure means the same thing wherever it is printed.
//
// A scenario drives Lockers, one per worker (a would-be process): a dlock
// client (Client), or in bench/ a peer library's lock object or an engine's
// raw round trips (a "floor").
package scenario

import (
	"context"
	"sync"
	"time"

	"github.com/dlockio/dlock"
)

// Locker takes locks by name for one worker.
type Locker interface {
	// Lock blocks until name is held or ctx is done.
	Lock(ctx context.Context, name string) (Held, error)
	Close() error
}

// Held is one holding of a lock.
type Held struct {
	// Unlock gives the lock up.
	Unlock func(context.Context) error
	// Token is the fencing token; 0 for locks that have none.
	Token uint64
	// Context ends when the lock is lost; nil for locks that cannot tell.
	// Work done under the lock runs in it.
	Context context.Context
}

// LockerFunc adapts a pair of functions to Locker.
type LockerFunc struct {
	LockFunc  func(ctx context.Context, name string) (Held, error)
	CloseFunc func() error // may be nil
}

// Lock calls LockFunc.
func (l LockerFunc) Lock(ctx context.Context, name string) (Held, error) {
	return l.LockFunc(ctx, name)
}

// Close calls CloseFunc if set.
func (l LockerFunc) Close() error {
	if l.CloseFunc == nil {
		return nil
	}
	return l.CloseFunc()
}

// Client adapts a dlock client, exactly what a user gets (renewal and loss
// monitoring included), keeping a Mutex per name as the docs advise. Close
// closes c; set CloseFunc to nil to share c between workers.
func Client(c *dlock.Client) LockerFunc {
	var mu sync.Mutex
	mutexes := map[string]*dlock.Mutex{}
	return LockerFunc{
		LockFunc: func(ctx context.Context, name string) (Held, error) {
			mu.Lock()
			m := mutexes[name]
			if m == nil {
				m = c.Mutex(name)
				mutexes[name] = m
			}
			mu.Unlock()
			l, err := m.Lock(ctx)
			if err != nil {
				return Held{}, err
			}
			return Held{Unlock: l.Unlock, Token: l.Token(), Context: l.Context()}, nil
		},
		CloseFunc: c.Close,
	}
}

// Budget bounds a measurement in count and in time; a zero Max is no bound
// in time.
type Budget struct {
	N   int
	Max time.Duration
}

func (b Budget) more(n int, start time.Time) bool {
	return n < b.N && (b.Max <= 0 || time.Since(start) < b.Max)
}

// Partial wraps the first error of a scenario whose figures still stand
// (some attempts failed, the rest were measured).
type Partial struct{ Err error }

func (p Partial) Error() string { return "some attempts failed, first: " + p.Err.Error() }

func (p Partial) Unwrap() error { return p.Err }
