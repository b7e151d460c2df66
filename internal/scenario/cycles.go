package scenario

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Cycle locks name and unlocks it.
func Cycle(ctx context.Context, l Locker, name string) error {
	h, err := l.Lock(ctx, name)
	if err != nil {
		return err
	}
	return h.Unlock(ctx)
}

// Cycles is what Uncontended measured.
type Cycles struct {
	Latencies []time.Duration // one per cycle, in the order they ran
	Elapsed   time.Duration
	// Mallocs and Bytes were allocated by the whole process meanwhile
	// (runtime.MemStats): client library, connection pool, the lease's
	// timers.
	Mallocs, Bytes uint64
}

// PerSec is the number of cycles per second.
func (c Cycles) PerSec() float64 { return float64(len(c.Latencies)) / c.Elapsed.Seconds() }

// Uncontended locks and unlocks name in a loop on one worker, nobody else
// wanting it: the engine's round trips plus the lock's own overhead. A
// first cycle, not measured, makes what a lock makes once (parents,
// scripts, mutexes).
func Uncontended(ctx context.Context, l Locker, name string, b Budget) (Cycles, error) {
	if err := Cycle(ctx, l, name); err != nil {
		return Cycles{}, err
	}
	lat := make([]time.Duration, 0, b.N)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for b.more(len(lat), start) {
		t := time.Now()
		if err := Cycle(ctx, l, name); err != nil {
			return Cycles{}, err
		}
		lat = append(lat, time.Since(t))
	}
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	return Cycles{Latencies: lat, Elapsed: el, Mallocs: m1.Mallocs - m0.Mallocs, Bytes: m1.TotalAlloc - m0.TotalAlloc}, nil
}

// Goroutines holds n distinct names (prefix-0 … prefix-n-1) on one worker
// and returns how many goroutines each held lock costs. A lock taken and
// released first warms the worker (sessions, connections), so that only
// per-lock goroutines count.
func Goroutines(ctx context.Context, l Locker, prefix string, n int) (float64, error) {
	if err := Cycle(ctx, l, prefix+"-warm"); err != nil {
		return 0, err
	}
	before := runtime.NumGoroutine()
	var held []Held
	defer func() {
		for _, h := range held {
			h.Unlock(ctx)
		}
	}()
	for i := range n {
		h, err := l.Lock(ctx, fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			return 0, err
		}
		held = append(held, h)
	}
	return float64(runtime.NumGoroutine()-before) / float64(n), nil
}

// Grants is what ManyNames measured.
type Grants struct {
	N, Errors int64
	Elapsed   time.Duration
}

// PerSec is the number of grants per second.
func (g Grants) PerSec() float64 { return float64(g.N) / g.Elapsed.Seconds() }

// ManyNames has every worker lock and unlock random names among n distinct
// ones (prefix-0 … prefix-n-1), held for nothing but the cycle, until b's
// grants are made or its time is up. Failed attempts are counted and the
// first one returned (as a Partial if some grants were made).
func ManyNames(ctx context.Context, ls []Locker, prefix string, n int, b Budget) (Grants, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if b.Max > 0 {
		runCtx, cancel = context.WithTimeout(ctx, b.Max)
	}
	defer cancel()
	var grants, errs atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for _, l := range ls {
		wg.Go(func() {
			for runCtx.Err() == nil && grants.Load() < int64(b.N) {
				h, err := l.Lock(runCtx, names[rand.N(n)])
				if err == nil {
					err = h.Unlock(context.WithoutCancel(runCtx))
					grants.Add(1)
				}
				if err != nil && runCtx.Err() == nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	g := Grants{N: grants.Load(), Errors: errs.Load(), Elapsed: time.Since(start)}
	if p := firstErr.Load(); p != nil {
		if g.N == 0 {
			return g, *p
		}
		return g, Partial{*p}
	}
	if g.N == 0 && ctx.Err() != nil {
		return g, ctx.Err()
	}
	return g, nil
}

// errNoHandoff: the budget's time ran out before the first handoff.
var errNoHandoff = errors.New("no handoff within the time budget")
