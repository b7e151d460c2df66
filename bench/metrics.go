package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/dlockio/dlock/internal/scenario"
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
	Uncontended scenario.Budget // scenario (a): cycles
	CounterK    int             // scenario (b): increments per worker
	CounterMax  time.Duration
	Handoff     scenario.Budget // scenario (c): rounds
	HoldMin     time.Duration
	HoldMax     time.Duration
	Names       int             // scenario (d): distinct names
	NamesG      int             // scenario (d): goroutines
	NamesBudget scenario.Budget // scenario (d): grants
	Held        int             // scenario (e): locks held at once to count goroutines
}

// DefaultConfig fits the whole run, five runs of every contender, in ten
// minutes on a 2-core machine.
var DefaultConfig = Config{
	Uncontended: scenario.Budget{N: 2000, Max: 400 * time.Millisecond},
	CounterK:    100,
	CounterMax:  2 * time.Second,
	Handoff:     scenario.Budget{N: 15, Max: 2 * time.Second},
	HoldMin:     5 * time.Millisecond,
	HoldMax:     15 * time.Millisecond,
	Names:       1000,
	NamesG:      16,
	NamesBudget: scenario.Budget{N: 4000, Max: 700 * time.Millisecond},
	Held:        20,
}

func newWorkers(ctx context.Context, c Contender, n int) ([]scenario.Locker, func(), error) {
	ws := make([]scenario.Locker, 0, n)
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

var ms = scenario.Ms

// Uncontended is scenario (a) and the per-cycle half of (e).
func Uncontended(ctx context.Context, c Contender, name string, b scenario.Budget) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, 1)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	cy, err := scenario.Uncontended(ctx, ws[0], name, b)
	if err != nil {
		return nil, err
	}
	n := float64(len(cy.Latencies))
	return Metrics{
		MCyclesPerSec:   cy.PerSec(),
		MP50:            ms(scenario.Percentile(cy.Latencies, 0.5)),
		MP99:            ms(scenario.Percentile(cy.Latencies, 0.99)),
		MAllocsPerCycle: float64(cy.Mallocs) / n,
		MBytesPerCycle:  float64(cy.Bytes) / n,
	}, nil
}

// Goroutines is the other half of (e).
func Goroutines(ctx context.Context, c Contender, prefix string, n int) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, 1)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	g, err := scenario.Goroutines(ctx, ws[0], prefix, n)
	if err != nil {
		return nil, err
	}
	return Metrics{MGoroutines: g}, nil
}

// SharedCounter is scenario (b): w workers each add k to the family's
// counter, reading and writing it under the lock, for at most maxDur.
func SharedCounter(ctx context.Context, c Contender, fam Family, name string, w, k int, maxDur time.Duration) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, w)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	r, err := scenario.SharedCounter(ctx, ws, []scenario.Counter{fam.Counter}, scenario.CounterConfig{
		Name: name, Key: name + "-counter", Increments: k, Max: maxDur, Requests: fam.Commands,
	})
	if r == nil {
		return nil, err
	}
	waits := r.Waits()
	m := Metrics{
		MWall:      r.Elapsed.Seconds(),
		MIncPerSec: r.PerSec(),
		MDone:      float64(r.Done()),
		MLost:      float64(r.Lost()),
		MMaxWait:   ms(slices.Max(append(waits, 0))),
		MP99Wait:   ms(scenario.Percentile(waits, 0.99)),
		MErrors:    float64(r.Errors),
	}
	if n := r.Done(); n > 1 {
		m[MOwnerChange] = 100 * float64(r.OwnerChanges()) / float64(n-1)
	}
	if r.Requests >= 0 && r.Done() > 0 {
		m[MCmdPerInc] = float64(r.Requests) / float64(r.Done())
	}
	return m, err
}

// Handoff is scenario (c).
func Handoff(ctx context.Context, c Contender, name string, b scenario.Budget, holdMin, holdMax time.Duration) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, 2)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	h := scenario.NewHandoff(ws[0], ws[1], name, scenario.HandoffConfig{HoldMin: holdMin, HoldMax: holdMax})
	lat, err := h.Run(ctx, b)
	if lat == nil {
		return nil, err
	}
	return Metrics{MP50: ms(scenario.Percentile(lat, 0.5)), MP99: ms(scenario.Percentile(lat, 0.99)), MOverlap: float64(h.Overlaps)}, err
}

// ManyNames is scenario (d): g workers lock random names among n.
func ManyNames(ctx context.Context, c Contender, prefix string, n, g int, b scenario.Budget) (Metrics, error) {
	ws, closeAll, err := newWorkers(ctx, c, g)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	gr, err := scenario.ManyNames(ctx, ws, prefix, n, b)
	if gr.N == 0 {
		return nil, err
	}
	return Metrics{MGrantsPerSec: gr.PerSec(), MErrors: float64(gr.Errors)}, err
}
