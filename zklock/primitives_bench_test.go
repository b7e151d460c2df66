package zklock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/testserver"
)

// benchHold is the work done under each lease in BenchmarkPrimitives.
const benchHold = 2 * time.Millisecond

// BenchmarkPrimitives: workers, each on a session of its own, take a lease
// of one name, hold it benchHold and let it go, b.N times between them:
// the mutex and readers with 10 workers, the mutex and a semaphore of 5
// with 20. It reports leases/s and, for the semaphore, the most permits
// held at once.
//
//	go test -run '^$' -bench Primitives -benchtime 400x ./zklock
func BenchmarkPrimitives(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	type take func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error)
	mutex := func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
		return c.Mutex(name).Lock
	}
	rlock := func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
		return c.RWMutex(name).RLock
	}
	sem5 := func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
		return c.Semaphore(name, 5).Acquire
	}
	for _, bc := range []struct {
		name    string
		workers int
		take    take
	}{
		{"mutex/10", 10, mutex},
		{"rlock/10", 10, rlock},
		{"mutex/20", 20, mutex},
		{"semaphore-5/20", 20, sem5},
	} {
		b.Run(bc.name, func(b *testing.B) {
			name := "bench/" + bc.name + "/" + newGUID()[:8]
			takes := make([]func(context.Context) (*dlock.Lease, error), bc.workers)
			for i := range takes {
				c, _ := benchClient(b, servers)
				takes[i] = bc.take(c, name)
			}
			var left atomic.Int64
			left.Store(int64(b.N))
			var inUse, most atomic.Int64
			var mu sync.Mutex
			var takeT, unlockT []time.Duration
			var wg sync.WaitGroup
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			for _, take := range takes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						t0 := time.Now()
						l, err := take(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						t1 := time.Since(t0)
						n := inUse.Add(1)
						for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
						}
						time.Sleep(benchHold)
						inUse.Add(-1)
						t2 := time.Now()
						if err := l.Unlock(ctx); err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						takeT, unlockT = append(takeT, t1), append(unlockT, time.Since(t2))
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "leases/s")
			b.ReportMetric(float64(most.Load()), "max-held")
			b.ReportMetric(scenario.Ms(scenario.Median(takeT)), "take-p50-ms")
			b.ReportMetric(scenario.Ms(scenario.Median(unlockT)), "unlock-p50-ms")
			b.Log(fmt.Sprintf("%d leases in %v, at most %d held at once", b.N, elapsed.Round(time.Millisecond), most.Load()))
		})
	}
}
