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
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/internal/testserver"
)

// Run: go test -run '^$' -bench . -benchtime 2s ./zklock (servers from
// scripts/services.sh up). Figures and the exact command are in BENCH_NOTES.md.

const benchSession = 10 * time.Second

var worldACL = zk.WorldACL(zk.PermAll)

func benchConn(b *testing.B, servers []string) (*zk.Conn, <-chan zk.Event) {
	b.Helper()
	conn, events, err := zk.Connect(servers, benchSession, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Close)
	for ev := range events {
		if ev.State == zk.StateHasSession {
			break
		}
	}
	return conn, events
}

func benchClient(b *testing.B, servers []string) (*dlock.Client, *zk.Conn) {
	b.Helper()
	conn, events := benchConn(b, servers)
	c, err := New(conn, events, &Options{Prefix: testRoot, SessionTimeout: benchSession})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c, conn
}

// benchHarness gives each driver a session of its own on a connection
// the harness owns; the counter is a znode, on the driver's connection.
type benchHarness struct {
	b       *testing.B
	servers []string
}

func (h benchHarness) MakeDriver(context.Context) (driver.Driver, error) {
	conn, events := benchConn(h.b, h.servers)
	return NewDriver(conn, events, &Options{Prefix: testRoot, SessionTimeout: benchSession})
}

func (h benchHarness) Close() {}

func (h benchHarness) Counter(d driver.Driver) drivertest.Counter {
	c, _ := engines.OfDriver(d)
	return c
}

// BenchmarkDriver runs dlock's scenarios (drivertest.RunBenchmarks).
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, benchHarness{b, testserver.ZooKeeper(b)})
}

func benchPath(b *testing.B) string {
	p := "/dlockbench/" + strconv.FormatInt(time.Now().UnixNano(), 36) + newGUID()[:6]
	return p
}

func mkdirs(b *testing.B, conn *zk.Conn, p string) {
	b.Helper()
	cur := ""
	for _, part := range splitPath(p) {
		cur += "/" + part
		if _, err := conn.Create(cur, nil, zk.FlagPersistent, worldACL); err != nil && err != zk.ErrNodeExists {
			b.Fatal(err)
		}
	}
}

func splitPath(p string) []string {
	var out []string
	start := 1
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

// BenchmarkUncontended times, in each iteration and so under the same
// machine load, the floor (one ephemeral-sequential create and one delete:
// the two writes any queue lock needs), a zklock Lock+Unlock and a zk.Lock
// Lock+Unlock, and reports each one's median and floor/zklock.
func BenchmarkUncontended(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	conn, _ := benchConn(b, servers)
	dir := benchPath(b)
	mkdirs(b, conn, dir)
	c, _ := benchClient(b, servers)
	m := c.Mutex("bench/uncontended/" + newGUID())
	pconn, _ := benchConn(b, servers)
	peer := zk.NewLock(pconn, benchPath(b), worldACL)
	ctx := context.Background()
	var floor, ours, theirs []time.Duration
	misses0 := pipelineMisses.Load()
	for b.Loop() {
		t0 := time.Now()
		p, err := conn.Create(dir+"/n-", nil, zk.FlagEphemeralSequential, worldACL)
		if err != nil {
			b.Fatal(err)
		}
		if err := conn.Delete(p, -1); err != nil {
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
		t2 := time.Now()
		if err := peer.Lock(); err != nil {
			b.Fatal(err)
		}
		if err := peer.Unlock(); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		floor, ours, theirs = append(floor, t1.Sub(t0)), append(ours, t2.Sub(t1)), append(theirs, t3.Sub(t2))
	}
	f, o, th := scenario.Median(floor), scenario.Median(ours), scenario.Median(theirs)
	b.ReportMetric(scenario.Ms(f), "floor-p50-ms")
	b.ReportMetric(scenario.Ms(o), "zklock-p50-ms")
	b.ReportMetric(scenario.Ms(th), "zk.Lock-p50-ms")
	b.ReportMetric(float64(f)/float64(o), "floor/zklock")
	b.ReportMetric(float64(pipelineMisses.Load()-misses0)/float64(len(ours)), "rereads/op")
}

// peerLock is go-zookeeper's own zk.Lock on a session of its own, one lock
// object per name as its docs show. It takes no context.
func peerLock(b *testing.B, servers []string, dir string) scenario.Locker {
	conn, _ := benchConn(b, servers)
	var mu sync.Mutex
	locks := map[string]*zk.Lock{}
	return scenario.LockerFunc{LockFunc: func(_ context.Context, name string) (scenario.Held, error) {
		mu.Lock()
		l := locks[name]
		if l == nil {
			l = zk.NewLock(conn, dir+"/"+name, worldACL)
			locks[name] = l
		}
		mu.Unlock()
		if err := l.Lock(); err != nil {
			return scenario.Held{}, err
		}
		return scenario.Held{Unlock: func(context.Context) error { return l.Unlock() }}, nil
	}}
}

// BenchmarkHandoff: zk.Lock's handoff, to set against
// BenchmarkDriver/Handoff: the time from the holder's unlock call to the
// waiter's lock returning, released once the waiter's node is queued.
func BenchmarkHandoff(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	b.Run("zk.Lock", func(b *testing.B) {
		admin, _ := benchConn(b, servers)
		dir := benchPath(b)
		h := scenario.NewHandoff(peerLock(b, servers, dir), peerLock(b, servers, dir), "lock", scenario.HandoffConfig{
			Queued: func(context.Context) (bool, error) {
				k, _, err := admin.Children(dir + "/lock")
				return len(k) >= 2, err
			},
		})
		var samples []time.Duration
		for b.Loop() {
			d, err := h.Round(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			samples = append(samples, d)
		}
		b.ReportMetric(scenario.Ms(scenario.Median(samples)), "p50-ms")
		b.ReportMetric(scenario.Ms(scenario.Percentile(samples, .9)), "p90-ms")
	})
}

// BenchmarkCounter: zk.Lock in the shared-counter scenario, to set against
// BenchmarkDriver/Counter: W workers, each with its own session, do 100
// increments each of a counter kept in a znode under the lock. The count
// must come out exact.
func BenchmarkCounter(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	for _, workers := range []int{10, 50} {
		b.Run(fmt.Sprintf("zk.Lock/workers=%d", workers), func(b *testing.B) {
			admin, _ := benchConn(b, servers)
			counter := engines.ZK(admin)
			var incr, secs float64
			for b.Loop() {
				b.StopTimer()
				dir := benchPath(b)
				mkdirs(b, admin, dir)
				ls := make([]scenario.Locker, workers)
				for i := range ls {
					ls[i] = peerLock(b, servers, dir)
				}
				b.StartTimer()
				r, err := scenario.SharedCounter(context.Background(), ls, []scenario.Counter{counter},
					scenario.CounterConfig{Name: "lock", Key: "bench-" + newGUID()[:12], Increments: 100, FailFast: true})
				if err != nil {
					b.Fatal(err)
				}
				if r.Final != r.Want {
					b.Errorf("counter = %d, want %d", r.Final, r.Want)
				}
				incr, secs = incr+float64(r.Done()), secs+r.Elapsed.Seconds()
			}
			b.ReportMetric(incr/secs, "incr/s")
		})
	}
}
