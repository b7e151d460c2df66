package redislock

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// Benchmarks run against a dedicated redis-server, so that other tests on
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

// BenchmarkUncontended: one Lock+Unlock per op, against the raw floor
// SET NX PX + DEL.
func BenchmarkUncontended(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	b.Run("floor", func(b *testing.B) {
		rdb := benchClient(b, addr)
		b.ReportAllocs()
		for b.Loop() {
			if ok, err := rdb.SetNX(ctx, "floor-uncontended", "x", 15*time.Second).Result(); !ok || err != nil {
				b.Fatal(ok, err)
			}
			if err := rdb.Del(ctx, "floor-uncontended").Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("redislock", func(b *testing.B) {
		c, err := New(benchClient(b, addr), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		m := c.Mutex("bench-uncontended")
		b.ReportAllocs()
		for b.Loop() {
			l, err := m.Lock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkHandoff: the time from the holder's release to a blocked waiter
// holding the lock. The floor's waiter spins on SET NX PX with no pause,
// the fastest a polling waiter can be (and the most expensive).
func BenchmarkHandoff(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	admin := benchClient(b, addr)
	b.Run("floor", func(b *testing.B) {
		holder, waiter := benchClient(b, addr), benchClient(b, addr)
		var lat []time.Duration
		for b.Loop() {
			holder.Set(ctx, "floor-handoff", "h", 15*time.Second)
			got := make(chan time.Time)
			go func() {
				for {
					if ok, _ := waiter.SetNX(ctx, "floor-handoff", "w", 15*time.Second).Result(); ok {
						got <- time.Now()
						return
					}
				}
			}()
			time.Sleep(time.Millisecond)
			start := time.Now()
			holder.Del(ctx, "floor-handoff")
			lat = append(lat, (<-got).Sub(start))
			waiter.Del(ctx, "floor-handoff")
		}
		b.ReportMetric(float64(percentile(lat, .5).Microseconds()), "p50-µs")
		b.ReportMetric(float64(percentile(lat, .99).Microseconds()), "p99-µs")
	})
	b.Run("redislock", func(b *testing.B) {
		ca, err := New(benchClient(b, addr), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ca.Close()
		cb, err := New(benchClient(b, addr), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cb.Close()
		name := "bench-handoff"
		channel := (&Driver{prefix: DefaultPrefix}).keysOf(name).channel
		var lat []time.Duration
		for b.Loop() {
			la, err := ca.Mutex(name).Lock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			got := make(chan *dlock.Lease)
			go func() {
				l, err := cb.Mutex(name).Lock(ctx)
				if err != nil {
					panic(err)
				}
				got <- l
			}()
			for admin.PubSubNumSub(ctx, channel).Val()[channel] == 0 {
				time.Sleep(100 * time.Microsecond)
			}
			time.Sleep(time.Millisecond) // let the waiter finish its attempt and block
			start := time.Now()
			la.Unlock(ctx)
			lb := <-got
			lat = append(lat, time.Since(start))
			lb.Unlock(ctx)
		}
		b.ReportMetric(float64(percentile(lat, .5).Microseconds()), "p50-µs")
		b.ReportMetric(float64(percentile(lat, .99).Microseconds()), "p99-µs")
	})
}

// BenchmarkCounter: W workers, each with a client (connection) of its own
// as separate processes would have, do 100 increments each of a counter
// kept in Redis (GET, then SET) under the lock. One op is the whole run.
func BenchmarkCounter(b *testing.B) {
	addr := benchServer(b)
	benchCounter(b, []string{addr}, func(rdbs []*redis.Client) (*dlock.Client, error) { return New(rdbs[0], nil) })
}

// BenchmarkCounterRedlock: the same over a 5-node Redlock; the counter
// lives on the first node. Commands are counted over all five nodes.
func BenchmarkCounterRedlock(b *testing.B) {
	var addrs []string
	for range 5 {
		addrs = append(addrs, benchServer(b))
	}
	benchCounter(b, addrs, func(rdbs []*redis.Client) (*dlock.Client, error) {
		nodes := make([]redis.UniversalClient, len(rdbs))
		for i, r := range rdbs {
			nodes[i] = r
		}
		return NewRedlock(nodes, nil)
	})
}

// counterRuns keeps lock names and counters of runs apart when -count
// repeats a benchmark on the same server.
var counterRuns atomic.Int64

func benchCounter(b *testing.B, addrs []string, open func([]*redis.Client) (*dlock.Client, error)) {
	ctx := context.Background()
	var admins []*redis.Client
	for _, a := range addrs {
		admins = append(admins, benchClient(b, a))
	}
	const perWorker = 100
	for _, workers := range []int{10, 50} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			count := &commandCounter{}
			clients := make([]*dlock.Client, workers)
			rdbs := make([]*redis.Client, workers) // the counter's node
			for i := range clients {
				var rs []*redis.Client
				for _, a := range addrs {
					rs = append(rs, benchClient(b, a, count))
				}
				rdbs[i] = rs[0]
				c, err := open(rs)
				if err != nil {
					b.Fatal(err)
				}
				clients[i] = c
				defer c.Close()
			}
			var waits []time.Duration
			var elapsed time.Duration
			var sent, executed int64
			total := 0
			for b.Loop() {
				name := fmt.Sprintf("bench-counter-%d-%d", workers, counterRuns.Add(1))
				key := "counter:" + name
				var before int64
				for _, a := range admins {
					before += commandCalls(b, a)
				}
				sentBefore := count.n.Load()
				start := time.Now()
				var mu sync.Mutex
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						m := clients[w].Mutex(name)
						for range perWorker {
							t0 := time.Now()
							l, err := m.Lock(ctx)
							if err != nil {
								panic(err)
							}
							wait := time.Since(t0)
							v, _ := rdbs[w].Get(ctx, key).Int()
							rdbs[w].Set(ctx, key, v+1, 0)
							if err := l.Unlock(ctx); err != nil {
								panic(err)
							}
							mu.Lock()
							waits = append(waits, wait)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				elapsed += time.Since(start)
				sent += count.n.Load() - sentBefore
				for _, a := range admins {
					executed += commandCalls(b, a) - 1 // the INFO itself
				}
				executed -= before
				if v, _ := admins[0].Get(ctx, key).Int(); v != workers*perWorker {
					b.Fatalf("counter = %d, want %d", v, workers*perWorker)
				}
				total += workers * perWorker
			}
			b.ReportMetric(float64(total)/elapsed.Seconds(), "incr/s")
			b.ReportMetric(float64(percentile(waits, .99).Microseconds()), "p99-wait-µs")
			b.ReportMetric(float64(sent)/float64(total), "cmds-sent/incr")
			b.ReportMetric(float64(executed)/float64(total), "cmds-run/incr")
		})
	}
}

// commandCalls is the server's count of commands run, scripts' inner
// commands included.
func commandCalls(b *testing.B, admin *redis.Client) int64 {
	s, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
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
	return n
}

// BenchmarkUncontendedPaired alternates one floor cycle (SET NX PX + DEL)
// and one Lock+Unlock cycle on the same server and reports the median of
// each and their ratio. On a shared, noisy machine a load spike then hits
// both sides alike, where separate runs of BenchmarkUncontended land in
// different windows and their ratio swings by 2x.
func BenchmarkUncontendedPaired(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	rdb := benchClient(b, addr)
	c, err := New(benchClient(b, addr), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := c.Mutex("bench-paired")
	var floor, ours []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if ok, err := rdb.SetNX(ctx, "floor-paired", "x", 15*time.Second).Result(); !ok || err != nil {
			b.Fatal(ok, err)
		}
		if err := rdb.Del(ctx, "floor-paired").Err(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		l, err := m.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		floor, ours = append(floor, t1.Sub(t0)), append(ours, time.Since(t1))
	}
	f, o := percentile(floor, .5), percentile(ours, .5)
	b.ReportMetric(float64(f.Nanoseconds())/1e3, "floor-p50-µs")
	b.ReportMetric(float64(o.Nanoseconds())/1e3, "dlock-p50-µs")
	b.ReportMetric(float64(f)/float64(o), "rate-x-floor")
}
