package drivertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/scenario"
)

// Counter is the shared counter of the counter benchmark, kept in the
// engine: a read and a write, made safe only by the lock. Keys are made of
// letters, digits, '-' and '_'.
type Counter interface {
	Get(ctx context.Context, key string) (int64, error)
	Set(ctx context.Context, key string, v int64) error
	Delete(ctx context.Context, key string) error
}

// Counterer is implemented by benchmark harnesses that keep the counter in
// their engine, on the connection of the driver d they made, so that the
// counter benchmark's critical section costs what a real one would. Without
// it the counter lives in the process.
type Counterer interface {
	Counter(d driver.Driver) Counter
}

// RequestCounter is implemented by benchmark harnesses that count the
// requests their drivers and counters send to the engine (sent, counted
// by the client) and those the engine ran (ran, counted by the server: a
// Redis script's inner commands count; -1 if the engine cannot tell). The
// counter benchmark reports both per increment.
type RequestCounter interface {
	Requests(ctx context.Context) (sent, ran int64, err error)
}

// Benchmark sizes.
const (
	benchIncrements = 100  // per worker, in the counter benchmark
	benchNames      = 1000 // distinct names in ManyNames
	benchNamesG     = 16   // workers in ManyNames
	benchHeld       = 20   // locks held at once in Goroutines
)

// RunBenchmarks runs dlock's scenarios (internal/scenario, the same as
// `dlock bench` and the peer benchmarks in bench/) on the engine behind h,
// each worker with a driver of its own from h.MakeDriver, as separate
// processes would have:
//
//   - Uncontended: one Lock+Unlock per op, nobody else wanting the lock.
//   - Handoff: a holder releases while another client waits; the figures
//     (p50-µs, p99-µs) run from the release call to the waiter holding.
//   - Counter/workers=W: one op is W workers each making 100 increments of
//     a counter (Counterer) under the lock; the counter must come out exact
//     and the tokens increase in the order the counter did.
//   - ManyNames: 16 workers lock random names among 1000; one op is a grant.
//   - Goroutines: goroutines per held lock, holding 20 names at once.
//
// A driver's bench_test.go is its harness, this call, and the benchmarks
// only it has (floors, peer libraries). The caller closes h after.
func RunBenchmarks(b *testing.B, h Harness) {
	b.Run("Uncontended", func(b *testing.B) { benchUncontended(b, h) })
	b.Run("Handoff", func(b *testing.B) { benchHandoff(b, h) })
	for _, w := range []int{10, 50} {
		b.Run(fmt.Sprintf("Counter/workers=%d", w), func(b *testing.B) { benchCounter(b, h, w) })
	}
	b.Run("ManyNames", func(b *testing.B) { benchManyNames(b, h) })
	b.Run("Goroutines", func(b *testing.B) { benchGoroutines(b, h) })
}

// benchClients returns n clients with drivers of their own, closed at the
// end of the benchmark.
func benchClients(b *testing.B, h Harness, n int) []*dlock.Client {
	b.Helper()
	cs := make([]*dlock.Client, n)
	for i := range cs {
		d, err := h.MakeDriver(b.Context())
		if err != nil {
			b.Fatalf("MakeDriver: %v", err)
		}
		c, err := dlock.NewClient(d)
		if err != nil {
			b.Fatalf("NewClient: %v", err)
		}
		b.Cleanup(func() {
			if err := c.Close(); err != nil && !errors.Is(err, dlock.ErrClosed) {
				b.Logf("closing client: %v", err)
			}
		})
		cs[i] = c
	}
	return cs
}

// lockers adapts clients to the scenarios; the clients stay open until
// the benchmark's cleanup.
func lockers(cs []*dlock.Client) []scenario.Locker {
	ls := make([]scenario.Locker, len(cs))
	for i, c := range cs {
		l := scenario.Client(c)
		l.CloseFunc = nil
		ls[i] = l
	}
	return ls
}

// benchName returns a name no other benchmark (or earlier run) uses, made
// of letters, digits, '-' and '_' so that it may name a counter too.
func benchName(b *testing.B) string {
	r := make([]byte, 4)
	rand.Read(r)
	return strings.NewReplacer("/", "-", "=", "-", "#", "-").Replace("dlockbench-"+b.Name()) + "-" + hex.EncodeToString(r)
}

func benchUncontended(b *testing.B, h Harness) {
	ctx := b.Context()
	l := lockers(benchClients(b, h, 1))[0]
	name := benchName(b)
	if err := scenario.Cycle(ctx, l, name); err != nil { // parents, scripts, mutexes
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := scenario.Cycle(ctx, l, name); err != nil {
			b.Fatal(err)
		}
	}
}

func benchHandoff(b *testing.B, h Harness) {
	ctx := b.Context()
	cs := benchClients(b, h, 2)
	ls := lockers(cs)
	name := benchName(b)
	cfg := scenario.HandoffConfig{HoldMax: time.Millisecond}
	if _, ok := cs[0].Driver().(driver.Inspector); ok {
		cfg.Queued = func(ctx context.Context) (bool, error) {
			st, err := cs[0].Status(ctx, name)
			return st.Waiters != 0, err // -1: the engine cannot tell; the hold gives the waiter time
		}
	}
	hand := scenario.NewHandoff(ls[0], ls[1], name, cfg)
	var lat []time.Duration
	for b.Loop() {
		d, err := hand.Round(ctx)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, d)
	}
	if hand.Overlaps > 0 {
		b.Fatalf("%d of %d waiters were granted the lock before the holder released it", hand.Overlaps, len(lat))
	}
	b.ReportMetric(float64(scenario.Percentile(lat, .5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(scenario.Percentile(lat, .99).Microseconds()), "p99-µs")
}

// counterRuns keeps the lock names and counters of runs apart when -count
// repeats a benchmark on the same engine.
var counterRuns atomic.Int64

func benchCounter(b *testing.B, h Harness, workers int) {
	ctx := b.Context()
	cs := benchClients(b, h, workers)
	counters := make([]scenario.Counter, workers)
	for i, c := range cs {
		counters[i] = scenario.MemCounter()
		if cr, ok := h.(Counterer); ok {
			counters[i] = cr.Counter(c.Driver())
		}
	}
	rc, counting := h.(RequestCounter)
	requests := func() (sent, ran int64) {
		sent, ran, err := rc.Requests(ctx)
		if err != nil {
			b.Fatalf("counting requests: %v", err)
		}
		return sent, ran
	}
	var (
		total, sent, ran      int64
		ranKnown              = true
		elapsed               time.Duration
		waits, holds, unlocks []time.Duration
		handoffs              []time.Duration
	)
	for b.Loop() {
		name := fmt.Sprintf("%s-%d", benchName(b), counterRuns.Add(1))
		var sent0, ran0 int64
		if counting {
			sent0, ran0 = requests()
		}
		r, err := scenario.SharedCounter(ctx, lockers(cs), counters, scenario.CounterConfig{Name: name, Increments: benchIncrements, FailFast: true})
		if err != nil {
			b.Fatal(err)
		}
		if counting {
			sent1, ran1 := requests()
			sent += sent1 - sent0
			ran += ran1 - ran0
			ranKnown = ranKnown && ran0 >= 0
		}
		if r.Final != r.Want {
			b.Fatalf("counter = %d, want %d", r.Final, r.Want)
		}
		if err := r.OrderErr(); err != nil {
			b.Fatalf("grants out of token order: %v", err)
		}
		total += r.Done()
		elapsed += r.Elapsed
		hs, us := r.Holds()
		waits, holds, unlocks = append(waits, r.Waits()...), append(holds, hs...), append(unlocks, us...)
		handoffs = append(handoffs, r.Handoffs()...)
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "incr/s")
	b.ReportMetric(float64(scenario.Percentile(waits, .99).Microseconds()), "p99-wait-µs")
	b.ReportMetric(float64(scenario.Median(handoffs).Microseconds()), "handoff-p50-µs")
	b.ReportMetric(scenario.Ms(scenario.Median(holds)), "hold-p50-ms")
	b.ReportMetric(scenario.Ms(scenario.Median(unlocks)), "unlock-p50-ms")
	if counting {
		// The counter's own read and write are 2 of them.
		b.ReportMetric(float64(sent)/float64(total), "cmds-sent/incr")
		if ranKnown {
			b.ReportMetric(float64(ran)/float64(total), "cmds-run/incr")
		}
	}
}

func benchManyNames(b *testing.B, h Harness) {
	ls := lockers(benchClients(b, h, benchNamesG))
	prefix := benchName(b)
	b.ResetTimer()
	g, err := scenario.ManyNames(b.Context(), ls, prefix, benchNames, scenario.Budget{N: b.N})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(g.PerSec(), "grants/s")
}

func benchGoroutines(b *testing.B, h Harness) {
	l := lockers(benchClients(b, h, 1))[0]
	prefix := benchName(b)
	var first float64
	i := 0
	for b.Loop() {
		per, err := scenario.Goroutines(b.Context(), l, fmt.Sprintf("%s-%d", prefix, i), benchHeld)
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			// Later rounds would count the goroutines of the round
			// before that are still ending.
			first = per
		}
		i++
	}
	b.ReportMetric(first, "goroutines/lock")
}
