package redislock

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/internal/testserver"
)

// Benchmarks run against dedicated redis-servers, so that other tests on
// the shared nodes neither slow them nor pollute INFO commandstats.
//
//	go test -run '^$' -bench . -benchmem -benchtime 2000x ./redislock

func benchServer(b *testing.B) string {
	b.Helper()
	return testserver.StartRedis(b).Addr()
}

func benchClient(b *testing.B, addr string, hooks ...redis.Hook) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	for _, h := range hooks {
		rdb.AddHook(h)
	}
	b.Cleanup(func() { rdb.Close() })
	return rdb
}

// benchHarness gives each driver clients of its own to addrs (one address:
// a single node; several: Redlock), counting every command they send; the
// counter is on the first node, on the driver's own client.
type benchHarness struct {
	b      *testing.B
	addrs  []string
	admins []*redis.Client
	count  *commandCounter
}

var (
	_ drivertest.Counterer      = (*benchHarness)(nil)
	_ drivertest.RequestCounter = (*benchHarness)(nil)
)

func newBenchHarness(b *testing.B, addrs []string) *benchHarness {
	h := &benchHarness{b: b, addrs: addrs, count: &commandCounter{}}
	for _, a := range addrs {
		h.admins = append(h.admins, benchClient(b, a))
	}
	return h
}

func (h *benchHarness) MakeDriver(context.Context) (driver.Driver, error) {
	var nodes []redis.UniversalClient
	for _, a := range h.addrs {
		nodes = append(nodes, benchClient(h.b, a, h.count))
	}
	if len(nodes) == 1 {
		return NewDriver(nodes[0], nil)
	}
	return NewRedlockDriver(nodes, nil)
}

func (h *benchHarness) Close() {}

func (h *benchHarness) Counter(d driver.Driver) drivertest.Counter {
	c, _ := engines.OfDriver(d)
	return c
}

// Requests: sent is counted by the drivers' clients, ran by the servers
// (INFO commandstats: a script's inner commands count).
func (h *benchHarness) Requests(ctx context.Context) (sent, ran int64, err error) {
	for _, a := range h.admins {
		n, err := commandCalls(ctx, a)
		if err != nil {
			return 0, 0, err
		}
		ran += n
	}
	return h.count.n.Load(), ran, nil
}

// BenchmarkDriver runs dlock's scenarios (drivertest.RunBenchmarks) on one
// node.
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, newBenchHarness(b, []string{benchServer(b)}))
}

// BenchmarkDriverRedlock runs them on a 5-node Redlock; the counter lives
// on the first node. Commands are counted over all five nodes.
func BenchmarkDriverRedlock(b *testing.B) {
	var addrs []string
	for range 5 {
		addrs = append(addrs, benchServer(b))
	}
	drivertest.RunBenchmarks(b, newBenchHarness(b, addrs))
}

// floor is SET NX PX and DEL, the least any Redis lock can do; its waiter
// spins on SET NX PX with no pause, the fastest a polling waiter can be
// (and the most expensive).
func floor(rdb *redis.Client) scenario.Locker {
	return scenario.LockerFunc{LockFunc: func(ctx context.Context, name string) (scenario.Held, error) {
		for {
			ok, err := rdb.SetNX(ctx, name, "x", 15*time.Second).Result()
			if err != nil {
				return scenario.Held{}, err
			}
			if ok {
				return scenario.Held{Unlock: func(ctx context.Context) error { return rdb.Del(ctx, name).Err() }}, nil
			}
		}
	}}
}

// BenchmarkUncontended: one floor cycle per op, to set against
// BenchmarkDriver/Uncontended.
func BenchmarkUncontended(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	b.Run("floor", func(b *testing.B) {
		l := floor(benchClient(b, addr))
		b.ReportAllocs()
		for b.Loop() {
			if err := scenario.Cycle(ctx, l, "floor-uncontended"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandoff: the floor's handoff, to set against
// BenchmarkDriver/Handoff.
func BenchmarkHandoff(b *testing.B) {
	addr := benchServer(b)
	b.Run("floor", func(b *testing.B) {
		h := scenario.NewHandoff(floor(benchClient(b, addr)), floor(benchClient(b, addr)), "floor-handoff",
			scenario.HandoffConfig{HoldMin: time.Millisecond, HoldMax: time.Millisecond})
		var lat []time.Duration
		for b.Loop() {
			d, err := h.Round(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, d)
		}
		b.ReportMetric(float64(scenario.Percentile(lat, .5).Microseconds()), "p50-µs")
		b.ReportMetric(float64(scenario.Percentile(lat, .99).Microseconds()), "p99-µs")
	})
}

// commandCalls is the server's count of commands run, scripts' inner
// commands included, less the INFO that asks.
func commandCalls(ctx context.Context, admin *redis.Client) (int64, error) {
	s, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, line := range strings.Split(s, "\n") {
		_, rest, ok := strings.Cut(line, ":calls=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		c, _ := strconv.ParseInt(v, 10, 64)
		n += c
	}
	return n - 1, nil
}

// BenchmarkUncontendedPaired alternates one floor cycle (SET NX PX + DEL)
// and one Lock+Unlock cycle on the same server and reports the median of
// each and their ratio. On a shared, noisy machine a load spike then hits
// both sides alike, where separate runs of the floor and of
// BenchmarkDriver/Uncontended land in different windows and their ratio
// swings by 2x.
func BenchmarkUncontendedPaired(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	fl := floor(benchClient(b, addr))
	c, err := New(benchClient(b, addr), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ours := scenario.Client(c)
	var floors, dlocks []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := scenario.Cycle(ctx, fl, "floor-paired"); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := scenario.Cycle(ctx, ours, "bench-paired"); err != nil {
			b.Fatal(err)
		}
		floors, dlocks = append(floors, t1.Sub(t0)), append(dlocks, time.Since(t1))
	}
	f, o := scenario.Median(floors), scenario.Median(dlocks)
	b.ReportMetric(float64(f.Nanoseconds())/1e3, "floor-p50-µs")
	b.ReportMetric(float64(o.Nanoseconds())/1e3, "dlock-p50-µs")
	b.ReportMetric(float64(f)/float64(o), "rate-x-floor")
}
