package redislock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
)

// BenchmarkScale: one client takes N distinct locks (16 at a time), holds
// them through three renewal intervals (TTL 6 s: a renewal every 2 s, as in
// issue 16's table) and releases them all, on dedicated servers. It reports
// what holding costs: heap and goroutines per held lock, the requests the
// servers received per renewal interval (EVALSHA and EVAL: one per script
// run) and the commands they ran (INFO commandstats, a script's inner
// commands included), and the time to release all. batch=off is the same
// with each lock renewed and released by its own script (as before
// batching); DLOCK_SCALE_HEAPPROFILE=FILE writes the heap profile taken
// while every lock is held (of the last sub-benchmark run);
// lost counts the leases lost while held (none expected).
//
//	go test -run '^$' -bench 'Scale' -benchtime 1x ./redislock
func BenchmarkScale(b *testing.B) {
	for _, topo := range []struct {
		name  string
		nodes int
	}{{"single", 1}, {"redlock", 5}} {
		b.Run(topo.name, func(b *testing.B) {
			var addrs []string
			for range topo.nodes {
				addrs = append(addrs, benchServer(b))
			}
			for _, n := range []int{1000, 10000} {
				for _, batch := range []bool{true, false} {
					name := fmt.Sprintf("locks=%d/batch=%v", n, map[bool]string{true: "on", false: "off"}[batch])
					b.Run(name, func(b *testing.B) {
						for b.Loop() {
							scaleRun(b, addrs, n, batch)
						}
					})
				}
			}
		})
	}
}

func scaleRun(b *testing.B, addrs []string, n int, batch bool) {
	ctx := context.Background()
	const ttl = 6 * time.Second
	var nodes []redis.UniversalClient
	var admins []*redis.Client
	for _, a := range addrs {
		nodes = append(nodes, benchClient(b, a))
		admins = append(admins, benchClient(b, a))
	}
	var d *Driver
	var err error
	if len(nodes) == 1 {
		d, err = NewDriver(nodes[0], nil)
	} else {
		d, err = NewRedlockDriver(nodes, nil)
	}
	if err != nil {
		b.Fatal(err)
	}
	if !batch {
		for _, nd := range d.nodes {
			nd.batch, nd.releases = nil, nil
		}
	}
	c, err := dlock.NewClient(d, dlock.WithTTL(ttl))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	prefix := fmt.Sprintf("scale/%d/", time.Now().UnixNano())

	heap0, gor0 := heapAndGoroutines()
	leases := make([]*dlock.Lease, n)
	start := time.Now()
	parallel(n, func(i int) {
		l, err := c.Mutex(prefix + strconv.Itoa(i)).TryLock(ctx)
		if err != nil {
			b.Error(err)
			return
		}
		leases[i] = l
	})
	took := time.Since(start)
	if b.Failed() {
		b.FailNow()
	}
	heap1, gor1 := heapAndGoroutines()
	if p := os.Getenv("DLOCK_SCALE_HEAPPROFILE"); p != "" {
		// The heap while every lock is held (run one sub-benchmark).
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}

	interval := ttl / 3
	before := scaleCalls(b, admins)
	time.Sleep(3 * interval)
	after := scaleCalls(b, admins)
	lost := 0
	for _, l := range leases {
		if l.Err() != nil {
			lost++
		}
	}
	start = time.Now()
	parallel(n, func(i int) {
		if err := leases[i].Unlock(ctx); err != nil && !errors.Is(err, dlock.ErrLockLost) {
			b.Error(err)
		}
	})
	release := time.Since(start)

	b.ReportMetric(float64(n)/took.Seconds(), "grants/s")
	b.ReportMetric(float64(int64(heap1)-int64(heap0))/float64(n), "heap-B/lock")
	b.ReportMetric(float64(gor1-gor0)/float64(n), "goroutines/lock")
	b.ReportMetric(float64(after.requests-before.requests)/3, "requests/interval")
	b.ReportMetric(float64(after.commands-before.commands)/3, "commands/interval")
	b.ReportMetric(float64(release.Milliseconds()), "release-all-ms")
	b.ReportMetric(float64(lost), "lost")
}

// parallel runs f(0..n-1) on 16 goroutines.
func parallel(n int, f func(i int)) {
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

type calls struct{ requests, commands int64 }

// scaleCalls sums INFO commandstats over the nodes: the scripts run
// (requests) and every command run (commands, scripts' inner ones
// included), less the INFO calls that ask.
func scaleCalls(b *testing.B, admins []*redis.Client) calls {
	var out calls
	for _, a := range admins {
		s, err := a.Info(context.Background(), "commandstats").Result()
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(s, "\n") {
			cmd, rest, ok := strings.Cut(line, ":calls=")
			if !ok {
				continue
			}
			v, _, _ := strings.Cut(rest, ",")
			k, _ := strconv.ParseInt(v, 10, 64)
			switch cmd := strings.TrimPrefix(cmd, "cmdstat_"); cmd {
			case "info":
				continue
			case "evalsha", "eval":
				out.requests += k
			}
			out.commands += k
		}
	}
	return out
}
