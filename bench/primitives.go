package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
)

// PrimConfig sizes the RW-lock and semaphore scenarios (issue 14).
type PrimConfig struct {
	Readers int             // concurrent readers, and workers of the mutex they are compared with
	Permits int             // semaphore: n
	Workers int             // semaphore: workers, and workers of its mutex
	Budget  scenario.Budget // cycles and time of each measured phase
	Writer  time.Duration   // pause between a writer's locks under the reader stream
	Hold    time.Duration   // the work done under every lease, permit or lock
}

// DefaultPrim is issue 14's setting: 10 readers; n = 5 permits, 20 workers.
var DefaultPrim = PrimConfig{Readers: 10, Permits: 5, Workers: 20,
	Budget: scenario.Budget{N: 4000, Max: 600 * time.Millisecond}, Writer: 10 * time.Millisecond, Hold: time.Millisecond}

// Primitive metric names.
const (
	MReadPerSec     = "reads/s"
	MMutexPerSec    = "mutex cycles/s"
	MReadXMutex     = "reads × mutex"
	MWriterP99      = "writer wait p99 ms"
	MWriterN        = "writer locks"
	MPermitPerSec   = "permits/s"
	MPermitXMutex   = "permits × mutex"
	MMaxInUse       = "max permits in use"
	MOverPermit     = "over n"
	MMaxReaderWrite = "readers with writer"
)

// cycles has w goroutines take, hold for hold (the work) and release
// through acquire until b's cycles are done or its time is up, and returns
// the cycles per second. inUse, if not nil, counts holders from the grant
// to just before the release.
func cycles(ctx context.Context, w int, b scenario.Budget, hold time.Duration, acquire func(context.Context) (*dlock.Lease, error), inUse func(delta int)) (float64, error) {
	runCtx, cancel := context.WithTimeout(ctx, b.Max)
	defer cancel()
	var n atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range w {
		wg.Go(func() {
			for runCtx.Err() == nil && n.Load() < int64(b.N) {
				l, err := acquire(runCtx)
				if err != nil {
					if runCtx.Err() == nil {
						firstErr.CompareAndSwap(nil, &err)
						cancel()
					}
					return
				}
				if inUse != nil {
					inUse(1)
				}
				time.Sleep(hold) // the work under the lease
				if inUse != nil {
					inUse(-1)
				}
				if err := l.Unlock(context.WithoutCancel(runCtx)); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					cancel()
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return float64(n.Load()) / el.Seconds(), nil
}

// RW measures, on one client shared by every worker (one process):
// cfg.Readers readers taking and releasing a read lease of one name, against
// as many workers doing the same with a mutex; then the wait of a writer
// that locks every cfg.Writer while the readers keep coming (no writer
// starvation), checking that no reader holds with it. A wait still going
// on when the time is up counts with the time it had lasted (a lower bound).
func RW(ctx context.Context, t Target, name string, cfg PrimConfig) (Metrics, error) {
	c, err := t.Open(dlock.WithTTL(LockTTL))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if !c.Capabilities().Shared {
		return nil, fmt.Errorf("%w: no RWMutex on %s", dlock.ErrNotSupported, t.Family)
	}
	rw := c.RWMutex(name)
	reads, err := cycles(ctx, cfg.Readers, cfg.Budget, cfg.Hold, rw.RLock, nil)
	if err != nil {
		return nil, fmt.Errorf("readers: %w", err)
	}
	mu := c.Mutex(name + "-mutex")
	mutex, err := cycles(ctx, cfg.Readers, cfg.Budget, cfg.Hold, mu.Lock, nil)
	if err != nil {
		return nil, fmt.Errorf("mutex: %w", err)
	}
	m := Metrics{MReadPerSec: reads, MMutexPerSec: mutex, MReadXMutex: reads / mutex}

	// A writer among the readers.
	var readers, writer atomic.Int64
	var both atomic.Int64
	runCtx, cancel := context.WithTimeout(ctx, cfg.Budget.Max)
	defer cancel()
	var waits []time.Duration
	granted := 0
	var werr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer cancel() // the readers stop with the writer
		for runCtx.Err() == nil {
			t0 := time.Now()
			l, err := rw.Lock(runCtx)
			if err != nil {
				if runCtx.Err() == nil {
					werr = err
				} else {
					// Still waiting when the time was up: that wait
					// counts too, as at least this long.
					waits = append(waits, time.Since(t0))
				}
				return
			}
			granted++
			waits = append(waits, time.Since(t0))
			writer.Add(1)
			if readers.Load() > 0 {
				both.Add(1)
			}
			time.Sleep(cfg.Hold) // the work under the lease
			writer.Add(-1)
			if err := l.Unlock(context.WithoutCancel(runCtx)); err != nil {
				werr = err
				return
			}
			if sleepCtx(runCtx, cfg.Writer) != nil {
				return
			}
		}
	})
	_, rerr := cycles(runCtx, cfg.Readers, scenario.Budget{N: 1 << 30, Max: cfg.Budget.Max}, cfg.Hold, rw.RLock, func(d int) {
		readers.Add(int64(d))
		if d > 0 && writer.Load() > 0 {
			both.Add(1)
		}
	})
	wg.Wait()
	if werr != nil {
		return m, scenario.Partial{Err: fmt.Errorf("writer: %w", werr)}
	}
	if rerr != nil && !errors.Is(rerr, context.DeadlineExceeded) && !errors.Is(rerr, context.Canceled) {
		return m, scenario.Partial{Err: fmt.Errorf("readers beside the writer: %w", rerr)}
	}
	m[MWriterN] = float64(granted)
	m[MWriterP99] = ms(scenario.Percentile(waits, 0.99))
	m[MMaxReaderWrite] = float64(both.Load())
	return m, nil
}

// Semaphore measures cfg.Workers workers on one client taking and releasing
// one of cfg.Permits permits, against as many workers on a mutex, counting
// the holders between each grant and its release (never above n).
func Semaphore(ctx context.Context, t Target, name string, cfg PrimConfig) (Metrics, error) {
	c, err := t.Open(dlock.WithTTL(LockTTL))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if !c.Capabilities().Semaphore {
		return nil, fmt.Errorf("%w: no Semaphore on %s", dlock.ErrNotSupported, t.Family)
	}
	sem := c.Semaphore(name, cfg.Permits)
	var cur, peak atomic.Int64
	permits, err := cycles(ctx, cfg.Workers, cfg.Budget, cfg.Hold, sem.Acquire, func(d int) {
		v := cur.Add(int64(d))
		for p := peak.Load(); v > p && !peak.CompareAndSwap(p, v); p = peak.Load() {
		}
	})
	if err != nil {
		return nil, fmt.Errorf("semaphore: %w", err)
	}
	mu := c.Mutex(name + "-mutex")
	mutex, err := cycles(ctx, cfg.Workers, cfg.Budget, cfg.Hold, mu.Lock, nil)
	if err != nil {
		return nil, fmt.Errorf("mutex: %w", err)
	}
	over := 0.0
	if peak.Load() > int64(cfg.Permits) {
		over = float64(peak.Load() - int64(cfg.Permits))
	}
	return Metrics{MPermitPerSec: permits, MMutexPerSec: mutex, MPermitXMutex: permits / mutex,
		MMaxInUse: float64(peak.Load()), MOverPermit: over}, nil
}
