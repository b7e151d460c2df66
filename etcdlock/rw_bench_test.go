package etcdlock

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// rwHold is how long each benchmark's holder keeps what it got: a short
// critical section, so that sharing it can pay.
const rwHold = 5 * time.Millisecond

// BenchmarkShared: 10 workers, each on an etcd client of its own, take and
// give back a lease for rwHold in a loop for 2 s: as readers of one
// RWMutex, as holders of one Mutex, as holders of 5 permits of a
// Semaphore. Reports grants per second of each (and the readers' and
// permits' against the mutex's), the most holders seen at once, and the
// wait of a writer asking while the readers keep the lock read-held.
func BenchmarkShared(b *testing.B) {
	eps := testserver.Etcd(b)
	const workers, window = 10, 2 * time.Second
	clients := make([]*dlock.Client, workers)
	for i := range clients {
		clients[i] = newLockClient(b, newClient(b, eps))
	}
	loop := func(b *testing.B, acquire func(c *dlock.Client) (*dlock.Lease, error), during func()) (float64, int) {
		var n, inside, peak atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					l, err := acquire(c)
					if err != nil {
						b.Error(err)
						return
					}
					in := inside.Add(1)
					for p := peak.Load(); in > p && !peak.CompareAndSwap(p, in); p = peak.Load() {
					}
					time.Sleep(rwHold)
					inside.Add(-1)
					if err := l.Unlock(context.Background()); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
		}
		start := time.Now()
		if during != nil {
			during()
		}
		time.Sleep(window - time.Since(start))
		close(stop)
		wg.Wait()
		return float64(n.Load()) / time.Since(start).Seconds(), int(peak.Load())
	}
	ctx := context.Background()
	var mutexRate float64
	b.Run("Mutex", func(b *testing.B) {
		name := benchName(b)
		rate, peak := loop(b, func(c *dlock.Client) (*dlock.Lease, error) { return c.Mutex(name).Lock(ctx) }, nil)
		mutexRate = rate
		b.ReportMetric(rate, "grants/s")
		b.ReportMetric(float64(peak), "max-holders")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("Readers", func(b *testing.B) {
		name := benchName(b)
		var waits []time.Duration
		writer := newLockClient(b, newClient(b, eps))
		rate, peak := loop(b, func(c *dlock.Client) (*dlock.Lease, error) { return c.RWMutex(name).RLock(ctx) }, func() {
			time.Sleep(200 * time.Millisecond) // the readers are streaming
			for range 10 {
				start := time.Now()
				l, err := writer.RWMutex(name).Lock(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				waits = append(waits, time.Since(start))
				l.Unlock(ctx)
				time.Sleep(50 * time.Millisecond)
			}
		})
		b.ReportMetric(rate, "grants/s")
		if mutexRate > 0 {
			b.ReportMetric(rate/mutexRate, "x-mutex")
		}
		b.ReportMetric(float64(peak), "max-holders")
		if len(waits) > 0 {
			sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "writer-p50-ms")
			b.ReportMetric(float64(waits[len(waits)-1].Microseconds())/1000, "writer-max-ms")
		}
		b.ReportMetric(0, "ns/op")
	})
	b.Run(fmt.Sprintf("Semaphore/n=%d", 5), func(b *testing.B) {
		name := benchName(b)
		rate, peak := loop(b, func(c *dlock.Client) (*dlock.Lease, error) { return c.Semaphore(name, 5).Acquire(ctx) }, nil)
		if peak > 5 {
			b.Errorf("%d permits of 5 held at once", peak)
		}
		b.ReportMetric(rate, "grants/s")
		if mutexRate > 0 {
			b.ReportMetric(rate/mutexRate, "x-mutex")
		}
		b.ReportMetric(float64(peak), "max-holders")
		b.ReportMetric(0, "ns/op")
	})
}
