package zklock

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// BenchmarkHoldMany holds 10,000 distinct locks on one client (Dial's, TTL
// 6 s: renewals every 2 s) through two renewal intervals, then releases
// them: half 16 at a time, half 1,000 at a time. It reports, per held
// lock, the goroutines and heap the client spends, the renewal requests
// per interval, and the time to release all 10,000 at each concurrency
// (twice the half's; issue 16's scale goals).
//
//	go test -run '^$' -bench HoldMany -benchtime 1x ./zklock
func BenchmarkHoldMany(b *testing.B) {
	const n, workers, ttl = 10_000, 16, 6 * time.Second
	// Released 16 at a time, a release waits for its delete's round trip;
	// released by many callers at once, the deletes share multis.
	const releasers = 1000
	servers := testserver.ZooKeeper(b)
	ctx := context.Background()
	for b.Loop() {
		c, err := Dial(ctx, servers, &Options{Prefix: testRoot}, dlock.WithTTL(ttl))
		if err != nil {
			b.Fatal(err)
		}
		prefix := "bench/hold-many/" + newGUID()
		leases := make([]*dlock.Lease, n)
		heap0, g0 := heapNow(), runtime.NumGoroutine()
		start := time.Now()
		parallel(b, n, workers, func(i int) error {
			l, err := c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx)
			leases[i] = l
			return err
		})
		took := time.Since(start)
		heap1, g1 := heapNow(), runtime.NumGoroutine()
		rounds := renewMultis.Load()
		time.Sleep(2 * ttl / 3) // holding is what is measured: two renewal intervals
		rounds = renewMultis.Load() - rounds
		for _, l := range leases {
			select {
			case <-l.Done():
				b.Fatalf("lease %s ended: %v", l.Name(), context.Cause(l.Context()))
			default:
			}
		}
		start = time.Now()
		parallel(b, n/2, workers, func(i int) error { return leases[i].Unlock(ctx) })
		release16 := time.Since(start) * 2
		start = time.Now()
		parallel(b, n/2, releasers, func(i int) error { return leases[n/2+i].Unlock(ctx) })
		releaseMany := time.Since(start) * 2
		c.Close()
		b.ReportMetric(float64(n)/took.Seconds(), "grants/s")
		b.ReportMetric(float64(g1-g0)/n, "goroutines/lock")
		b.ReportMetric(float64(heap1-heap0)/n, "heap-B/lock")
		b.ReportMetric(float64(rounds)/2, "renewal-requests/interval")
		b.ReportMetric(release16.Seconds(), "release-all-16-s")
		b.ReportMetric(releaseMany.Seconds(), "release-all-1000-s")
	}
}

func heapNow() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// parallel runs f(0..n-1) on workers goroutines, failing b on an error.
func parallel(b *testing.B, n, workers int, f func(i int) error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		next int
	)
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}
