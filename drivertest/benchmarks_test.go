package drivertest

import (
	"context"
	"flag"
	"testing"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/memlock"
)

type memHarness struct {
	e     *memlock.Engine
	calls *int
}

func (h memHarness) MakeDriver(context.Context) (driver.Driver, error) {
	*h.calls++
	c, err := h.e.NewClient()
	if err != nil {
		return nil, err
	}
	return c.Driver(), nil // the client wrapper holds nothing of its own
}

func (memHarness) Close() {}

// TestRunBenchmarks runs every benchmark once on the in-process engine, so
// that `make test` keeps them working: go test runs benchmarks only when
// asked to.
func TestRunBenchmarks(t *testing.T) {
	if err := flag.Set("test.benchtime", "1x"); err != nil {
		t.Fatal(err)
	}
	calls := 0
	h := memHarness{memlock.NewEngine(), &calls}
	// testing.Benchmark forgets the failure of a sub-benchmark: run each
	// on its own, where a failure leaves N at 0.
	for _, bm := range []struct {
		name    string
		fn      func(*testing.B, Harness)
		drivers int
	}{
		{"Uncontended", benchUncontended, 1},
		{"Handoff", benchHandoff, 2},
		{"Counter/workers=10", func(b *testing.B, h Harness) { benchCounter(b, h, 10) }, 10},
		{"ManyNames", benchManyNames, benchNamesG},
		{"Goroutines", benchGoroutines, 1},
	} {
		calls = 0
		if r := testing.Benchmark(func(b *testing.B) { bm.fn(b, h) }); r.N == 0 || calls != bm.drivers {
			t.Errorf("%s: %v, %d drivers made, want %d", bm.name, r, calls, bm.drivers)
		}
	}
	// And the whole, for its wiring.
	calls = 0
	testing.Benchmark(func(b *testing.B) { RunBenchmarks(b, h) })
	if want := 1 + 2 + 10 + 50 + benchNamesG + 1; calls != want {
		t.Errorf("RunBenchmarks made %d drivers, want %d", calls, want)
	}
}
