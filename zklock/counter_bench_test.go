package zklock

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// BenchmarkCounterRequests is the peer benchmark's shared counter (W
// workers, one name, each increment a Get and a Set of a node under the
// lock) for dlock and for zk.Lock, each on one session dialled through a
// counting dialer: it reports increments per second and the lock's
// requests per increment, by operation (the counter's Get and Set go on
// another session, not counted).
//
//	go test -run '^$' -bench CounterRequests -benchtime 2000x ./zklock
func BenchmarkCounterRequests(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	ctx := context.Background()
	data, _ := benchConn(b, servers)
	for _, w := range []int{10, 50} {
		for _, who := range []string{"zk-lock", "dlock"} {
			b.Run(fmt.Sprintf("%s/w%d", who, w), func(b *testing.B) {
				var ops opCounter
				var lock func(name string) (func(), error)
				switch who {
				case "dlock":
					c, err := Dial(ctx, servers, &Options{Prefix: testRoot, Dialer: ops.dial}, dlock.WithTTL(10*time.Second))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					lock = func(name string) (func(), error) {
						l, err := c.Mutex(name).Lock(ctx)
						if err != nil {
							return nil, err
						}
						return func() { l.Unlock(ctx) }, nil
					}
				default:
					conn, _, err := zk.Connect(servers, 10*time.Second, zk.WithDialer(ops.dial), zk.WithLogger(quiet{}), zk.WithLogInfo(false))
					if err != nil {
						b.Fatal(err)
					}
					defer conn.Close()
					lock = func(name string) (func(), error) {
						l := zk.NewLock(conn, testRoot+"/"+name, worldACL)
						if err := l.Lock(); err != nil {
							return nil, err
						}
						return func() { l.Unlock() }, nil
					}
				}
				name := "bench-counter-" + newGUID()[:8]
				key := testRoot + "/" + name + "-value"
				if _, err := data.Create(key, []byte("0"), 0, worldACL); err != nil {
					b.Fatal(err)
				}
				defer data.Delete(key, -1)
				// Warm: the parent exists, the driver has seen it.
				if un, err := lock(name); err != nil {
					b.Fatal(err)
				} else {
					un()
				}
				n := b.N
				var next sync.Mutex
				left := n
				ops.reset()
				rl0, pm0, al0 := readlessGrants.Load(), pipelineMisses.Load(), aloneGrants.Load()
				start := time.Now()
				cpu0 := cpuTime(b)
				var wg sync.WaitGroup
				for range w {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							next.Lock()
							if left == 0 {
								next.Unlock()
								return
							}
							left--
							next.Unlock()
							un, err := lock(name)
							if err != nil {
								b.Error(err)
								return
							}
							v, _, err := data.Get(key)
							if err == nil {
								k, _ := strconv.Atoi(string(v))
								_, err = data.Set(key, []byte(strconv.Itoa(k+1)), -1)
							}
							un()
							if err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start)
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(n)/1e3, "cpu-us/inc")
				sent := ops.snapshot()
				b.ReportMetric(float64(n)/el.Seconds(), "inc/s")
				for op, k := range sent {
					b.ReportMetric(float64(k)/float64(n), op+"/inc")
				}
				b.Logf("requests per increment: %s; readless grants %d, pipeline misses %d, alone grants %d of %d",
					sent.per(n), readlessGrants.Load()-rl0, pipelineMisses.Load()-pm0, aloneGrants.Load()-al0, n)
			})
		}
	}
}
