package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Metrics of one measurement, by name (see the Metric* constants).
type Metrics map[string]float64

// Metric names. Latencies are in milliseconds.
const (
	MCyclesPerSec   = "cycles/s"
	MP50            = "p50 ms"
	MP99            = "p99 ms"
	MAllocsPerCycle = "allocs/cycle"
	MBytesPerCycle  = "B/cycle"
	MGoroutines     = "goroutines/held lock"
	MWall           = "wall s"
	MIncPerSec      = "inc/s"
	MDone           = "done"
	MLost           = "lost"
	MOwnerChange    = "owner changed %"
	MMaxWait        = "max wait ms"
	MP99Wait        = "p99 wait ms"
	MCmdPerInc      = "cmds/inc"
	MGrantsPerSec   = "grants/s"
	MErrors         = "errors"
	MOverlap        = "granted while held"
)

// Config bounds every scenario.
type Config struct {
	Uncontended Budget // scenario (a): cycles
	CounterK    int    // scenario (b): increments per worker
	CounterMax  time.Duration
	Handoff     Budget // scenario (c): rounds
	HoldMin     time.Duration
	HoldMax     time.Duration
	Names       int    // scenario (d): distinct names
	NamesG      int    // scenario (d): goroutines
	NamesBudget Budget // scenario (d): grants
	Held        int    // scenario (e): locks held at once to count goroutines
}

// DefaultConfig fits the whole run, five runs of every contender, in the
// issue's ten minutes on a 2-core machine.
var DefaultConfig = Config{
	Uncontended: Budget{N: 2000, Max: 400 * time.Millisecond},
	CounterK:    100,
	CounterMax:  2 * time.Second,
	Handoff:     Budget{N: 15, Max: 2 * time.Second},
	HoldMin:     5 * time.Millisecond,
	HoldMax:     15 * time.Millisecond,
	Names:       1000,
	NamesG:      16,
	NamesBudget: Budget{N: 4000, Max: 700 * time.Millisecond},
	Held:        20,
}

func newWorkers(ctx context.Context, c Contender, n int) ([]Worker, func(), error) {
	ws := make([]Worker, 0, n)
	closeAll := func() {
		for _, w := range ws {
			w.Close()
		}
	}
	for range n {
		w, err := c.NewWorker(ctx)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("%s: new worker: %w", c.Name, err)
		}
		ws = append(ws, w)
	}
	return ws, closeAll, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the q-quantile (nearest rank) of ds, which it sorts.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// Uncontended is scenario (a) and the per-cycle half of (e): one worker
// locks and unlocks one name in a loop.
func Uncontended(ctx context.Context, c Contender, name string, b Budget) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, 1)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	w := ws[0]
	cycle := func() error {
		unlock, err := w.Lock(ctx, name)
		if err != nil {
			return err
		}
		return unlock(ctx)
	}
	// The first cycle makes parents, scripts and mutexes; not what a
	// cycle costs.
	if err := cycle(); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, 0, b.N)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for len(lat) < b.N && time.Since(start) < b.Max {
		t := time.Now()
		if err := cycle(); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t))
	}
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	n := float64(len(lat))
	return Metrics{
		MCyclesPerSec:   n / el.Seconds(),
		MP50:            ms(percentile(lat, 0.5)),
		MP99:            ms(percentile(lat, 0.99)),
		MAllocsPerCycle: float64(m1.Mallocs-m0.Mallocs) / n,
		MBytesPerCycle:  float64(m1.TotalAlloc-m0.TotalAlloc) / n,
	}, nil
}

// Goroutines is the other half of (e): how many goroutines each held lock
// costs, holding n distinct names on one worker.
func Goroutines(ctx context.Context, c Contender, prefix string, n int) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, 1)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	// Warm the worker (sessions, connections) so only per-lock goroutines
	// are counted.
	unlock, err := ws[0].Lock(ctx, prefix+"-warm")
	if err != nil {
		return nil, err
	}
	if err := unlock(ctx); err != nil {
		return nil, err
	}
	before := runtime.NumGoroutine()
	var unlocks []func(context.Context) error
	defer func() {
		for _, u := range unlocks {
			u(ctx)
		}
	}()
	for i := range n {
		u, err := ws[0].Lock(ctx, fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			return nil, err
		}
		unlocks = append(unlocks, u)
	}
	return Metrics{MGoroutines: float64(runtime.NumGoroutine()-before) / float64(n)}, nil
}

// SharedCounter is scenario (b): w workers each add k to a counter kept in the
// engine, reading and writing it under the lock.
func SharedCounter(ctx context.Context, c Contender, fam Family, name string, w, k int, maxDur time.Duration) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, w)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	key := name + "-counter"
	if err := fam.Counter.Set(ctx, key, 0); err != nil {
		return nil, err
	}
	var cmd0 int64
	if fam.Commands != nil {
		cmd0 = fam.Commands()
	}
	runCtx, cancel := context.WithTimeout(ctx, maxDur)
	defer cancel()

	owners := make([]int32, w*k) // grant order: owners[i] made increment i
	var done, errs atomic.Int64
	waits := make([][]time.Duration, w)
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for id, wk := range ws {
		wg.Go(func() {
			for range k {
				t := time.Now()
				unlock, err := wk.Lock(runCtx, name)
				if err != nil {
					if runCtx.Err() != nil {
						return
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				waits[id] = append(waits[id], time.Since(t))
				// Work begun under the lock is finished even if the run's
				// time is up: a half-done increment would count as lost.
				held := context.WithoutCancel(runCtx)
				err = increment(held, fam.Counter, key)
				if err == nil {
					owners[done.Add(1)-1] = int32(id)
				}
				if uerr := unlock(held); uerr != nil && err == nil {
					err = uerr
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	final, err := fam.Counter.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	n := done.Load()
	changes := 0
	for i := 1; i < int(n); i++ {
		if owners[i] != owners[i-1] {
			changes++
		}
	}
	var all []time.Duration
	for _, ws := range waits {
		all = append(all, ws...)
	}
	m := Metrics{
		MWall:      wall.Seconds(),
		MIncPerSec: float64(n) / wall.Seconds(),
		MDone:      float64(n),
		MLost:      float64(n - final),
		MMaxWait:   ms(slices.Max(append(all, 0))),
		MP99Wait:   ms(percentile(all, 0.99)),
		MErrors:    float64(errs.Load()),
	}
	if n > 1 {
		m[MOwnerChange] = 100 * float64(changes) / float64(n-1)
	}
	if fam.Commands != nil && n > 0 {
		m[MCmdPerInc] = float64(fam.Commands()-cmd0) / float64(n)
	}
	if p := firstErr.Load(); p != nil {
		if n == 0 {
			return m, *p
		}
		return m, Partial{*p}
	}
	return m, nil
}

// Partial wraps the first error of a scenario whose figures still stand
// (some increments or grants failed, the rest were measured).
type Partial struct{ Err error }

func (p Partial) Error() string { return "some attempts failed, first: " + p.Err.Error() }

func increment(ctx context.Context, c Counter, key string) error {
	v, err := c.Get(ctx, key)
	if err != nil {
		return err
	}
	return c.Set(ctx, key, v+1)
}

// Handoff is scenario (c): a holder releases while a second worker waits in
// Lock; the figure is from just before the release call to the waiter's
// Lock returning. The hold is random so that a poller's phase is random too.
func Handoff(ctx context.Context, c Contender, name string, b Budget, holdMin, holdMax time.Duration) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, 2)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	runCtx, cancel := context.WithTimeout(ctx, b.Max+5*time.Second)
	defer cancel()
	holder, waiter := ws[0], ws[1]
	var lat []time.Duration
	overlaps := 0
	start := time.Now()
	for len(lat) < b.N && time.Since(start) < b.Max {
		unlock, err := holder.Lock(runCtx, name)
		if err != nil {
			return nil, err
		}
		type grant struct {
			at     time.Time
			unlock func(context.Context) error
			err    error
		}
		got := make(chan grant, 1)
		go func() {
			u, err := waiter.Lock(runCtx, name)
			got <- grant{time.Now(), u, err}
		}()
		// The waiter needs time to park; the hold is what the scenario is.
		time.Sleep(holdMin + rand.N(holdMax-holdMin))
		t0 := time.Now()
		if err := unlock(runCtx); err != nil {
			return nil, err
		}
		g := <-got
		if g.err != nil {
			return nil, g.err
		}
		if g.at.Before(t0) {
			// Granted while the holder still held it: a broken lock, not a
			// fast one.
			overlaps++
		}
		lat = append(lat, g.at.Sub(t0))
		if err := g.unlock(runCtx); err != nil {
			return nil, err
		}
		holder, waiter = waiter, holder
	}
	if len(lat) == 0 {
		return nil, errors.New("no handoff within the time budget")
	}
	m := Metrics{MP50: ms(percentile(lat, 0.5)), MP99: ms(percentile(lat, 0.99)), MOverlap: float64(overlaps)}
	if overlaps > 0 {
		return m, Partial{fmt.Errorf("%d of %d waiters were granted the lock before the holder released it", overlaps, len(lat))}
	}
	return m, nil
}

// ManyNames is scenario (d): g workers lock random names among n distinct
// ones, each held for nothing but the cycle.
func ManyNames(ctx context.Context, c Contender, prefix string, n, g int, b Budget) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, g)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	runCtx, cancel := context.WithTimeout(ctx, b.Max)
	defer cancel()
	var grants, errs atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for _, w := range ws {
		wg.Go(func() {
			for runCtx.Err() == nil && grants.Load() < int64(b.N) {
				unlock, err := w.Lock(runCtx, names[rand.N(n)])
				if err == nil {
					err = unlock(context.WithoutCancel(runCtx))
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
	el := time.Since(start)
	m := Metrics{MGrantsPerSec: float64(grants.Load()) / el.Seconds(), MErrors: float64(errs.Load())}
	if p := firstErr.Load(); p != nil {
		if grants.Load() == 0 {
			return nil, *p
		}
		return m, Partial{*p}
	}
	return m, nil
}
