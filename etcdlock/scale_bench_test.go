package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// rpcCount counts the gRPC messages a client sends: unary calls, and each
// message sent on a stream (a keep-alive, a watch creation).
type rpcCount struct{ n atomic.Int64 }

func (c *rpcCount) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	c.n.Add(1)
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *rpcCount) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return countedStream{s, c}, nil
}

type countedStream struct {
	grpc.ClientStream
	c *rpcCount
}

func (s countedStream) SendMsg(m any) error {
	s.c.n.Add(1)
	return s.ClientStream.SendMsg(m)
}

// BenchmarkScale: one client takes DLOCK_SCALE_N (10,000 by default)
// distinct locks with TTL 6 s, holds them for three renewal intervals and
// releases them all, through the public API. It reports goroutines and heap
// (after GC) per held lock, the gRPC messages the client sends per second
// while only holding, and the time to release them all at once (a goroutine each, as bench/'s scale
// scenario does).
//
//	go test -run '^$' -bench Scale -benchtime 1x ./etcdlock/
func BenchmarkScale(b *testing.B) {
	n := 10000
	if s := os.Getenv("DLOCK_SCALE_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	var rpcs rpcCount
	cli := newClient(b, testserver.Etcd(b), grpc.WithChainUnaryInterceptor(rpcs.unary), grpc.WithChainStreamInterceptor(rpcs.stream))
	const ttl = 6 * time.Second
	c, err := New(cli, &Options{Prefix: "dlockbench"}, dlock.WithTTL(ttl))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	prefix := benchName(b)
	leases := make([]*dlock.Lease, n)
	parallel := func(workers int, f func(i int) error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					if err := f(i); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		g0 := runtime.NumGoroutine()
		start := time.Now()
		parallel(16, func(i int) error {
			l, err := c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx)
			leases[i] = l
			return err
		})
		took := time.Since(start)
		if b.Failed() {
			return
		}
		// Goroutines and heap while only holding: the least of samples
		// taken every 250 ms over the window, so that a renewal wave in
		// flight (a context per renewal for a moment; no goroutine since
		// the locks renew by driver.AsyncRenewer) is not counted as the
		// cost of holding.
		rpcs.n.Store(0)
		hold := 3 * ttl / 3
		g1, heap := math.MaxInt, uint64(math.MaxUint64)
		for end := time.Now().Add(hold); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			runtime.GC()
			runtime.ReadMemStats(&m1)
			g1 = min(g1, runtime.NumGoroutine())
			if m1.HeapAlloc < heap {
				heap = m1.HeapAlloc
				if p := os.Getenv("DLOCK_SCALE_HEAPPROFILE"); p != "" {
					// The profile of the least heap seen.
					f, err := os.Create(p)
					if err != nil {
						b.Fatal(err)
					}
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}
		sent := rpcs.n.Load()
		lost := 0
		for _, l := range leases {
			if l.Err() != nil {
				lost++
			}
		}
		if lost > 0 {
			b.Errorf("%d of %d leases lost while held, e.g. %v", lost, n, firstErr(leases))
		}
		start = time.Now()
		parallel(n, func(i int) error {
			if err := leases[i].Unlock(ctx); err != nil && !errors.Is(err, dlock.ErrLockLost) {
				return err
			}
			return nil
		})
		release := time.Since(start)
		b.ReportMetric(float64(n)/took.Seconds(), "grants/s")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/lock")
		b.ReportMetric(float64(int64(heap)-int64(m0.HeapAlloc))/float64(n), "heap-B/lock")
		b.ReportMetric(float64(sent)/hold.Seconds(), "msgs/s-holding")
		b.ReportMetric(release.Seconds()*1000, "release-all-ms")
		b.ReportMetric(float64(lost), "lost")
		b.ReportMetric(0, "ns/op")
	}
}

func firstErr(leases []*dlock.Lease) error {
	for _, l := range leases {
		if err := l.Err(); err != nil {
			return err
		}
	}
	return nil
}
