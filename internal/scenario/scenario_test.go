package scenario_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/memlock"
)

func lockers(t *testing.T, e *memlock.Engine, n int) []scenario.Locker {
	t.Helper()
	ls := make([]scenario.Locker, n)
	for i := range ls {
		c, err := e.NewClient()
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = scenario.Client(c)
		t.Cleanup(func() { ls[i].Close() })
	}
	return ls
}

func TestSharedCounter(t *testing.T) {
	ctx := context.Background()
	var progress atomic.Int64
	r, err := scenario.SharedCounter(ctx, lockers(t, memlock.NewEngine(), 5), []scenario.Counter{scenario.MemCounter()},
		scenario.CounterConfig{Name: "counter-" + t.Name(), Increments: 40, FailFast: true, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if r.Final != 200 || r.Want != 200 || r.Done() != 200 || r.Lost() != 0 || progress.Load() != 200 {
		t.Fatalf("final %d want %d done %d lost %d progress %d", r.Final, r.Want, r.Done(), r.Lost(), progress.Load())
	}
	if err := r.OrderErr(); err != nil {
		t.Fatal(err)
	}
	if len(r.Waits()) != 200 || r.Requests != -1 {
		t.Fatalf("%d waits, %d requests", len(r.Waits()), r.Requests)
	}
	if v, _ := scenario.MemCounter().Get(ctx, "counter-"+t.Name()); v != 0 {
		t.Fatalf("counter left behind: %d", v)
	}
}

// A lock that lets everyone in loses increments, and SharedCounter shows it.
func TestSharedCounterBrokenLock(t *testing.T) {
	var ls []scenario.Locker
	for range 8 {
		ls = append(ls, scenario.LockerFunc{LockFunc: func(context.Context, string) (scenario.Held, error) {
			return scenario.Held{Unlock: func(context.Context) error { return nil }}, nil
		}})
	}
	c := slowCounter{scenario.MemCounter()}
	r, err := scenario.SharedCounter(context.Background(), ls, []scenario.Counter{c}, scenario.CounterConfig{Name: "broken-" + t.Name(), Increments: 20})
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost() == 0 {
		t.Fatalf("no increment lost without a lock: final %d of %d", r.Final, r.Done())
	}
	if r.OrderErr() != nil {
		t.Fatalf("OrderErr without tokens: %v", r.OrderErr())
	}
}

// Errors are counted and the run goes on, or with FailFast end it.
func TestSharedCounterErrors(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	l := scenario.LockerFunc{LockFunc: func(context.Context, string) (scenario.Held, error) {
		n++
		if n%2 == 0 {
			return scenario.Held{}, boom
		}
		return scenario.Held{Unlock: func(context.Context) error { return nil }}, nil
	}}
	cfg := scenario.CounterConfig{Name: "errors-" + t.Name(), Increments: 10}
	r, err := scenario.SharedCounter(context.Background(), []scenario.Locker{l}, []scenario.Counter{scenario.MemCounter()}, cfg)
	var p scenario.Partial
	if !errors.As(err, &p) || !errors.Is(err, boom) || r.Errors != 5 || r.Done() != 5 {
		t.Fatalf("err %v, %+v", err, r)
	}
	cfg.FailFast = true
	if _, err := scenario.SharedCounter(context.Background(), []scenario.Locker{l}, []scenario.Counter{scenario.MemCounter()}, cfg); !errors.Is(err, boom) {
		t.Fatalf("FailFast: err %v", err)
	}
}

func TestHandoff(t *testing.T) {
	ctx := context.Background()
	e := memlock.NewEngine()
	ls := lockers(t, e, 2)
	status, _ := e.NewClient()
	defer status.Close()
	name := "handoff-" + t.Name()
	h := scenario.NewHandoff(ls[0], ls[1], name, scenario.HandoffConfig{
		HoldMax: time.Millisecond,
		Queued: func(ctx context.Context) (bool, error) {
			st, err := status.Status(ctx, name)
			return st.Waiters > 0, err
		},
	})
	lat, err := h.Run(ctx, scenario.Budget{N: 20})
	if err != nil || len(lat) != 20 || h.Overlaps != 0 {
		t.Fatalf("%d rounds, %d overlaps, err %v", len(lat), h.Overlaps, err)
	}
}

func TestUncontendedManyNamesGoroutines(t *testing.T) {
	ctx := context.Background()
	e := memlock.NewEngine()
	ls := lockers(t, e, 4)
	c, err := scenario.Uncontended(ctx, ls[0], "cycle-"+t.Name(), scenario.Budget{N: 50, Max: 10 * time.Second})
	if err != nil || len(c.Latencies) != 50 || c.PerSec() <= 0 {
		t.Fatalf("%d cycles, err %v", len(c.Latencies), err)
	}
	g, err := scenario.ManyNames(ctx, ls, "names-"+t.Name(), 10, scenario.Budget{N: 100, Max: 10 * time.Second})
	if err != nil || g.N < 100 || g.Errors != 0 {
		t.Fatalf("%+v, err %v", g, err)
	}
	if _, err := scenario.Goroutines(ctx, ls[0], "held-"+t.Name(), 5); err != nil {
		t.Fatal(err)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0.001, 1}} {
		if got := scenario.Percentile(ds, tc.q); got != tc.want {
			t.Errorf("Percentile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if ds[0] != 100 {
		t.Error("Percentile sorted its argument")
	}
	if scenario.Percentile(nil, 0.5) != 0 {
		t.Error("Percentile of nothing")
	}
}

func TestFileCounter(t *testing.T) {
	ctx := context.Background()
	c := scenario.FileCounter(t.TempDir())
	if v, err := c.Get(ctx, "k"); v != 0 || err != nil {
		t.Fatal(v, err)
	}
	if err := c.Set(ctx, "k", 41); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k"); v != 41 || err != nil {
		t.Fatal(v, err)
	}
	if err := c.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
}

// slowCounter widens the window between a read and the write after it.
type slowCounter struct{ scenario.Counter }

func (c slowCounter) Get(ctx context.Context, key string) (int64, error) {
	v, err := c.Counter.Get(ctx, key)
	time.Sleep(200 * time.Microsecond)
	return v, err
}
