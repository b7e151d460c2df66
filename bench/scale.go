package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
)

// Target is one dlock driver on one engine setup, for the scenarios that
// measure what one client costs rather than compare libraries (scale, rw,
// semaphore): a client opened through the public API, the engine's raw
// floor and the servers' own request counter.
type Target struct {
	Name   string // dlock-redis, dlock-redis-1n, …
	Family string // redis, redis-1n, …
	Open   func(opts ...dlock.Option) (*dlock.Client, error)
	Floor  *RawFloor    // nil: the engine has no round trip to compare with (mem)
	Count  *ServerCount // nil: nothing to count (mem, file)
	// Sent counts the requests this process has sent to the engine
	// (client-side; nil if not counted): blind to Lua internals and the
	// servers' own work, but also to the other users of shared servers.
	Sent func() int64
	// SentIsRequests judges renewal requests by Sent rather than by Count:
	// Redis counts every command a script runs inside it as one it
	// handled, so its counter shows a one-script batch of N renewals as N
	// or more; the requests are the scripts.
	SentIsRequests bool
	// ScaleN, if not 0, replaces ScaleConfig.N for this target (an engine
	// too slow to take N locks within the run's time).
	ScaleN int
}

// RawFloor is the least a lock can cost on an engine: one create (SET NX,
// put-if-absent, ephemeral node, advisory lock) to take a name and one
// delete to give it back, with nothing else (no token, no renewal, no
// loss watching).
type RawFloor struct {
	Note string
	// Worker returns one goroutine's take and release; names it took are
	// released by the same worker (a session of its own where the engine
	// ties locks to one).
	Worker func(ctx context.Context) (FloorWorker, error)
}

// FloorWorker is one goroutine's floor.
type FloorWorker struct {
	Take, Release func(ctx context.Context, name string) error
	Close         func()
}

// ScaleConfig sizes the scale scenario.
type ScaleConfig struct {
	N      int           // distinct locks held at once
	G      int           // goroutines taking them (the floor uses as many)
	TTL    time.Duration // asked of every lock
	Renew  time.Duration // renewal interval asked of the client
	Window time.Duration // how long requests are counted while only holding
}

// DefaultScale is issue 16's setting: 10,000 locks, TTL 6 s, renewal every
// 2 s, requests counted over two renewal intervals.
var DefaultScale = ScaleConfig{N: 10000, G: 64, TTL: 6 * time.Second, Renew: 2 * time.Second, Window: 4 * time.Second}

// Scale metric names.
const (
	MFloorGrants   = "floor grants/s"
	MGrantsXFloor  = "grants × floor"
	MHeapPerLock   = "heap B/held lock"
	MReqPerSec     = "engine req/s holding"
	MIdleReqPerSec = "engine req/s before"
	MReqPerRenew   = "engine req/renewal interval"
	MReleaseMs     = "release all ms"
	MTakeMs        = "take all ms"
	MLostHolding   = "lost while holding"
	MLostTaking    = "lost by the last grant"
	MScaleN        = "locks held"
	MSentPerRenew  = "sent req/renewal interval"
)

// Scale takes cfg.N distinct locks on one client with cfg.G goroutines,
// holds them over cfg.Window and releases them all at once, each from a
// goroutine of its own as a user holding a lock per tenant would. Before
// that it measures the raw floor with the same concurrency and, on shared
// servers, the requests the servers handle without us over the same
// window, to subtract.
func Scale(ctx context.Context, t Target, prefix string, cfg ScaleConfig) (Metrics, error) {
	if t.ScaleN > 0 && t.ScaleN < cfg.N {
		cfg.N = t.ScaleN
	}
	m := Metrics{MScaleN: float64(cfg.N)}
	if t.Floor != nil {
		rate, err := floorGrants(ctx, t.Floor, prefix+"-floor", cfg)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		m[MFloorGrants] = rate
	}
	c, err := t.Open(dlock.WithTTL(cfg.TTL), dlock.WithRenewInterval(cfg.Renew))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// Warm up: sessions, connections, scripts.
	warm, err := c.Mutex(prefix + "-warm").Lock(ctx)
	if err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if err := warm.Unlock(ctx); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var idle int64 = -1
	if t.Count != nil {
		// What the servers handle without our locks, over the same window.
		if err := sleepCtx(ctx, t.Count.Settle); err != nil {
			return nil, err
		}
		if idle, err = countOver(ctx, t.Count, cfg.Window); err != nil {
			return nil, err
		}
		m[MIdleReqPerSec] = float64(idle) / cfg.Window.Seconds()
	}
	names := make([]string, cfg.N)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	leases := make([]*dlock.Lease, cfg.N)
	defer func() { // on a failure path: whatever is still held
		for _, l := range leases {
			if l != nil {
				l.Unlock(context.WithoutCancel(ctx))
			}
		}
	}()
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()

	start := time.Now()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range cfg.G {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.N {
					return
				}
				l, err := c.Mutex(names[i]).Lock(ctx)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("lock %d of %d: %w", i+1, cfg.N, err) })
					next.Store(int64(cfg.N))
					return
				}
				leases[i] = l
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	m[MTakeMs] = ms(took)
	m[MLostTaking] = float64(countLost(leases))
	m[MGrantsPerSec] = float64(cfg.N) / took.Seconds()
	if f, ok := m[MFloorGrants]; ok && f > 0 {
		m[MGrantsXFloor] = m[MGrantsPerSec] / f
	}
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	m[MGoroutines] = float64(runtime.NumGoroutine()-g0) / float64(cfg.N)
	m[MHeapPerLock] = (float64(ms1.HeapAlloc) - float64(ms0.HeapAlloc)) / float64(cfg.N)

	if t.Count != nil {
		if err := sleepCtx(ctx, t.Count.Settle); err != nil {
			return nil, err
		}
		var sent0 int64
		if t.Sent != nil {
			sent0 = t.Sent()
		}
		held, err := countOver(ctx, t.Count, cfg.Window)
		if err != nil {
			return nil, err
		}
		if t.Sent != nil {
			m[MSentPerRenew] = float64(t.Sent()-sent0) / (cfg.Window.Seconds() / cfg.Renew.Seconds())
		}
		m[MReqPerSec] = float64(held) / cfg.Window.Seconds()
		m[MReqPerRenew] = float64(held-idle) / (cfg.Window.Seconds() / cfg.Renew.Seconds())
	} else if err := sleepCtx(ctx, cfg.Window); err != nil {
		return nil, err
	}
	lost := countLost(leases)
	m[MLostHolding] = float64(lost)

	start = time.Now()
	errs := make([]error, cfg.N)
	for i, l := range leases {
		wg.Go(func() { errs[i] = l.Unlock(ctx) })
	}
	wg.Wait()
	m[MReleaseMs] = ms(time.Since(start))
	clear(leases)
	if lost == 0 {
		if err := errors.Join(errs...); err != nil {
			return m, scenario.Partial{Err: fmt.Errorf("release: %w", err)}
		}
	}
	return m, nil
}

func countOver(ctx context.Context, sc *ServerCount, d time.Duration) (int64, error) {
	a, err := sc.Read(ctx)
	if err != nil {
		return 0, fmt.Errorf("server count: %w", err)
	}
	if err := sleepCtx(ctx, d); err != nil {
		return 0, err
	}
	b, err := sc.Read(ctx)
	if err != nil {
		return 0, fmt.Errorf("server count: %w", err)
	}
	return b - a, nil
}

// sleepCtx waits out a measuring window.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// floorGrants takes cfg.N names with cfg.G floor workers and returns the
// grants per second, then releases them (not timed).
func floorGrants(ctx context.Context, f *RawFloor, prefix string, cfg ScaleConfig) (float64, error) {
	ws := make([]FloorWorker, 0, cfg.G)
	defer func() {
		for _, w := range ws {
			if w.Close != nil {
				w.Close()
			}
		}
	}()
	for range cfg.G {
		w, err := f.Worker(ctx)
		if err != nil {
			return 0, err
		}
		ws = append(ws, w)
	}
	taken := make([][]string, cfg.G)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for k, w := range ws {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.N {
					return
				}
				name := fmt.Sprintf("%s-%d", prefix, i)
				if err := w.Take(ctx, name); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					next.Store(int64(cfg.N))
					return
				}
				taken[k] = append(taken[k], name)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for k, w := range ws {
		wg.Go(func() {
			for _, name := range taken[k] {
				if err := w.Release(context.WithoutCancel(ctx), name); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return float64(cfg.N) / took.Seconds(), nil
}

// countLost counts the leases whose Done is closed.
func countLost(leases []*dlock.Lease) int {
	n := 0
	for _, l := range leases {
		select {
		case <-l.Done():
			n++
		default:
		}
	}
	return n
}
