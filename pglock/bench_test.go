package pglock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/internal/testserver"
)

// The benchmarks run fixed-size scenarios against the shared server and
// report medians and rates; run them once each:
//
//	go test -run '^$' -bench . -benchtime 1x ./pglock/

const cycles = 300 // uncontended cycles per run

func benchName(tb testing.TB) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "bench/" + tb.Name() + "/" + hex.EncodeToString(b)
}

func reportLatencies(b *testing.B, ds []time.Duration, total time.Duration) {
	b.ReportMetric(float64(len(ds))/total.Seconds(), "ops/s")
	b.ReportMetric(float64(scenario.Percentile(ds, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(scenario.Percentile(ds, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// benchHarness gives each driver a pool of its own, as separate processes
// would have; the counter is a row, written through the driver's pool.
type benchHarness struct {
	b   *testing.B
	url string
}

func (h benchHarness) MakeDriver(context.Context) (driver.Driver, error) {
	pool, err := pgxpool.New(context.Background(), h.url)
	if err != nil {
		return nil, err
	}
	h.b.Cleanup(pool.Close)
	return NewDriver(pool, &Options{Table: testTable})
}

func (h benchHarness) Close() {}

func (h benchHarness) Counter(d driver.Driver) drivertest.Counter {
	c, _ := engines.OfDriver(d)
	return c
}

// BenchmarkDriver runs dlock's scenarios (drivertest.RunBenchmarks).
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, benchHarness{b, testserver.Postgres(b)})
}

// floor is pg_advisory_lock and pg_advisory_unlock on one connection: the
// least any advisory lock can do (two round trips a cycle, no token).
func floor(b *testing.B, url string) scenario.Locker {
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	return scenario.LockerFunc{
		LockFunc: func(ctx context.Context, name string) (scenario.Held, error) {
			key := Key(name)
			if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
				return scenario.Held{}, err
			}
			return scenario.Held{Unlock: func(ctx context.Context) error {
				_, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key)
				return err
			}}, nil
		},
		CloseFunc: func() error { return conn.Close(context.Background()) },
	}
}

// BenchmarkCycle times uncontended Lock+Unlock cycles of the floor, to set
// against BenchmarkDriver/Uncontended.
func BenchmarkCycle(b *testing.B) {
	url := testserver.Postgres(b)
	l := floor(b, url)
	defer l.Close()
	c, err := scenario.Uncontended(context.Background(), l, benchName(b), scenario.Budget{N: cycles})
	if err != nil {
		b.Fatal(err)
	}
	reportLatencies(b, c.Latencies, c.Elapsed)
}

// BenchmarkRoundTrip times one SELECT 1 on a connection: the unit of the
// issue's handoff bound (p50 at most 3 round trips).
func BenchmarkRoundTrip(b *testing.B) {
	conn, err := pgx.Connect(context.Background(), testserver.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	lat := make([]time.Duration, 0, cycles)
	start := time.Now()
	for range cycles {
		t := time.Now()
		if _, err := conn.Exec(context.Background(), "SELECT 1"); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	reportLatencies(b, lat, time.Since(start))
}

// BenchmarkVsFloor interleaves blocks of uncontended cycles of the floor
// (pg_advisory_lock + pg_advisory_unlock on one connection) and of pglock
// (Mutex.Lock + Unlock through dlock), so that both see the same load,
// and reports each one's median cycle and their ratio (the issue's
// target: pglock at ≥ 0.85 × the floor's rate, x-floor ≥ 0.85).
func BenchmarkVsFloor(b *testing.B) {
	url := testserver.Postgres(b)
	ctx := context.Background()
	fl := floor(b, url)
	defer fl.Close()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	c, err := New(pool, &Options{Table: testTable})
	if err != nil {
		b.Fatal(err)
	}
	pl := scenario.Client(c)
	defer pl.Close()
	name := benchName(b)
	const block = 50
	var fs, ps []time.Duration
	run := func(l scenario.Locker, into *[]time.Duration) {
		for range block {
			t := time.Now()
			if err := scenario.Cycle(ctx, l, name); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(t))
		}
	}
	run(fl, new([]time.Duration)) // warm-up: connections, statements
	run(pl, new([]time.Duration))
	for i := 0; i < cycles/block || i < b.N; i++ {
		if i%2 == 0 {
			run(fl, &fs)
			run(pl, &ps)
		} else {
			run(pl, &ps)
			run(fl, &fs)
		}
	}
	f, p := scenario.Median(fs), scenario.Median(ps)
	b.ReportMetric(float64(f.Microseconds()), "floor-p50-µs")
	b.ReportMetric(float64(p.Microseconds()), "pglock-p50-µs")
	b.ReportMetric(float64(f)/float64(p), "x-floor")
	b.ReportMetric(0, "ns/op")
}
