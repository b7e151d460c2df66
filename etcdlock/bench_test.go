package etcdlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/internal/testserver"
)

// The benchmarks run fixed-size scenarios against the shared cluster and
// report medians and rates; run them once each:
//
//	go test -run '^$' -bench . -benchtime 1x ./etcdlock/

const (
	cycles   = 300 // uncontended cycles per run
	handoffs = 100 // handoffs per run
)

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

// benchHarness gives each driver an etcd client of its own, as separate
// processes would have; the counter is a key, on the driver's client.
type benchHarness struct {
	b         *testing.B
	endpoints []string
}

func (h benchHarness) MakeDriver(context.Context) (driver.Driver, error) {
	return NewDriver(newClient(h.b, h.endpoints), nil)
}

func (h benchHarness) Close() {}

func (h benchHarness) Counter(d driver.Driver) drivertest.Counter {
	c, _ := engines.OfDriver(d)
	return c
}

// BenchmarkDriver runs dlock's scenarios (drivertest.RunBenchmarks).
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, benchHarness{b, testserver.Etcd(b)})
}

// floor is a transaction that creates the key if absent, and a delete: the
// least any etcd lock can do. It has no waiting primitive.
func floor(cli *clientv3.Client) scenario.Locker {
	return scenario.LockerFunc{LockFunc: func(ctx context.Context, key string) (scenario.Held, error) {
		r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, "")).Commit()
		if err != nil || !r.Succeeded {
			return scenario.Held{}, fmt.Errorf("put-if-absent: %v", err)
		}
		return scenario.Held{Unlock: func(ctx context.Context) error { _, err := cli.Delete(ctx, key); return err }}, nil
	}}
}

// mutex is etcd's own concurrency.Mutex with a session of its own; its
// token is the revision of its key.
func mutex(b *testing.B, eps []string) scenario.Locker {
	s, err := concurrency.NewSession(newClient(b, eps), concurrency.WithTTL(15))
	if err != nil {
		b.Fatal(err)
	}
	return scenario.LockerFunc{
		LockFunc: func(ctx context.Context, name string) (scenario.Held, error) {
			m := concurrency.NewMutex(s, name)
			if err := m.Lock(ctx); err != nil {
				return scenario.Held{}, err
			}
			return scenario.Held{Unlock: m.Unlock, Token: uint64(m.Header().Revision)}, nil
		},
		CloseFunc: s.Close,
	}
}

// BenchmarkCycle times uncontended Lock+Unlock cycles of the floor and of
// concurrency.Mutex, to set against BenchmarkDriver/Uncontended.
func BenchmarkCycle(b *testing.B) {
	eps := testserver.Etcd(b)
	run := func(b *testing.B, l scenario.Locker) {
		defer l.Close()
		c, err := scenario.Uncontended(context.Background(), l, benchName(b), scenario.Budget{N: cycles})
		if err != nil {
			b.Fatal(err)
		}
		reportLatencies(b, c.Latencies, c.Elapsed)
	}
	b.Run("floor", func(b *testing.B) { run(b, floor(newClient(b, eps))) })
	b.Run("concurrency.Mutex", func(b *testing.B) { run(b, mutex(b, eps)) })
}

// BenchmarkHandoff measures concurrency.Mutex's handoff, to set against
// BenchmarkDriver/Handoff: the time from the holder's Unlock call to the
// waiter's Lock returning. The holder releases as soon as the waiter's
// queue key is visible, which is how a busy lock is handed on.
func BenchmarkHandoff(b *testing.B) {
	eps := testserver.Etcd(b)
	admin := newClient(b, eps)
	b.Run("concurrency.Mutex", func(b *testing.B) {
		name := benchName(b)
		holder, waiter := mutex(b, eps), mutex(b, eps)
		defer holder.Close()
		defer waiter.Close()
		h := scenario.NewHandoff(holder, waiter, name, scenario.HandoffConfig{Queued: func(ctx context.Context) (bool, error) {
			r, err := admin.Get(ctx, name+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && r.Count >= 2, err
		}})
		start := time.Now()
		lat, err := h.Run(context.Background(), scenario.Budget{N: handoffs})
		if err != nil {
			b.Fatal(err)
		}
		reportLatencies(b, lat, time.Since(start))
	})
}

// BenchmarkCounter runs the shared-counter scenario on concurrency.Mutex,
// to set against BenchmarkDriver/Counter: W workers, each with its own
// connection, each doing 100 increments of a counter kept in etcd under the
// lock. The counter must come out exact and the grants come in queue order
// (revisions increasing in the order the counter did).
func BenchmarkCounter(b *testing.B) {
	eps := testserver.Etcd(b)
	counter := engines.Etcd(newClient(b, eps))
	for _, workers := range []int{10, 50} {
		b.Run(fmt.Sprintf("w%d/concurrency.Mutex", workers), func(b *testing.B) {
			ls := make([]scenario.Locker, workers)
			for i := range ls {
				ls[i] = mutex(b, eps)
				defer ls[i].Close()
			}
			r, err := scenario.SharedCounter(context.Background(), ls, []scenario.Counter{counter},
				scenario.CounterConfig{Name: benchName(b), Key: fmt.Sprintf("bench-counter-%d", time.Now().UnixNano()), Increments: 100, FailFast: true})
			if err != nil {
				b.Fatal(err)
			}
			if r.Final != r.Want {
				b.Errorf("counter = %d, want %d", r.Final, r.Want)
			}
			if err := r.OrderErr(); err != nil {
				b.Errorf("not in queue order: %v", err)
			}
			holds, unlocks := r.Holds()
			n := float64(r.Done())
			b.ReportMetric(r.PerSec(), "incr/s")
			mean := func(ds []time.Duration) float64 {
				var sum time.Duration
				for _, d := range ds {
					sum += d
				}
				return scenario.Ms(sum) / float64(len(ds))
			}
			b.ReportMetric(mean(holds), "cs-ms")
			b.ReportMetric(mean(unlocks), "unlock-ms")
			b.ReportMetric(scenario.Ms(r.Elapsed)/n, "per-incr-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
