package zklock

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
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

// BenchmarkUncontended: Lock + Unlock with nobody else around.
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
	f, o, th := median(floor), median(ours), median(theirs)
	b.ReportMetric(ms(f), "floor-p50-ms")
	b.ReportMetric(ms(o), "zklock-p50-ms")
	b.ReportMetric(ms(th), "zk.Lock-p50-ms")
	b.ReportMetric(float64(f)/float64(o), "floor/zklock")
	b.ReportMetric(float64(pipelineMisses.Load()-misses0)/float64(len(ours)), "rereads/op")
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// handoff measures, per iteration, the time from the holder's unlock call
// to the waiter's lock returning.
func handoff(b *testing.B, lockA, lockB func() (func(), error), queued func() bool) {
	b.Helper()
	var samples []time.Duration
	for b.Loop() {
		unlockA, err := lockA()
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan func(), 1)
		var at time.Time
		go func() {
			u, err := lockB()
			at = time.Now()
			if err != nil {
				b.Error(err)
			}
			got <- u
		}()
		for !queued() {
			time.Sleep(time.Millisecond) // no event says the waiter is queued
		}
		start := time.Now()
		unlockA()
		u := <-got
		if u == nil {
			b.FailNow()
		}
		samples = append(samples, at.Sub(start))
		u()
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(samples[len(samples)*9/10].Microseconds())/1000, "p90-ms")
}

func BenchmarkHandoff(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	b.Run("zklock", func(b *testing.B) {
		ca, admin := benchClient(b, servers)
		cb, _ := benchClient(b, servers)
		name := "bench/handoff/" + newGUID()
		ctx := context.Background()
		lock := func(c *dlock.Client) func() (func(), error) {
			return func() (func(), error) {
				l, err := c.Mutex(name).Lock(ctx)
				if err != nil {
					return nil, err
				}
				return func() { l.Unlock(ctx) }, nil
			}
		}
		parent := testRoot + "/" + encodeName(name)
		handoff(b, lock(ca), lock(cb), func() bool {
			k, _, _ := admin.Children(parent)
			return len(k) >= 2
		})
	})
	b.Run("zk.Lock", func(b *testing.B) {
		connA, _ := benchConn(b, servers)
		connB, _ := benchConn(b, servers)
		p := benchPath(b)
		la, lb := zk.NewLock(connA, p, worldACL), zk.NewLock(connB, p, worldACL)
		lock := func(l *zk.Lock) func() (func(), error) {
			return func() (func(), error) {
				if err := l.Lock(); err != nil {
					return nil, err
				}
				return func() { l.Unlock() }, nil
			}
		}
		handoff(b, lock(la), lock(lb), func() bool {
			k, _, _ := connA.Children(p)
			return len(k) >= 2
		})
	})
}

// BenchmarkCounter: W workers, each with its own session, do 100
// increments each of a counter kept in a znode (Get, then Set) under the
// lock. The count must come out exact.
func BenchmarkCounter(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	for _, workers := range []int{10, 50} {
		for _, impl := range []string{"zklock", "zk.Lock"} {
			b.Run(fmt.Sprintf("%s/workers=%d", impl, workers), func(b *testing.B) {
				for b.Loop() {
					counter(b, servers, impl, workers, 100)
				}
			})
		}
	}
}

func counter(b *testing.B, servers []string, impl string, workers, each int) {
	b.Helper()
	b.StopTimer()
	dir := benchPath(b)
	admin, _ := benchConn(b, servers)
	mkdirs(b, admin, dir)
	counterPath := dir + "/counter"
	if _, err := admin.Create(counterPath, []byte("0"), zk.FlagPersistent, worldACL); err != nil {
		b.Fatal(err)
	}
	type worker struct {
		conn *zk.Conn
		lock func() (func(), error)
	}
	ws := make([]worker, workers)
	ctx := context.Background()
	for i := range ws {
		switch impl {
		case "zklock":
			c, conn := benchClient(b, servers)
			m := c.Mutex(dir)
			ws[i] = worker{conn, func() (func(), error) {
				l, err := m.Lock(ctx)
				if err != nil {
					return nil, err
				}
				return func() { l.Unlock(ctx) }, nil
			}}
		default:
			conn, _ := benchConn(b, servers)
			l := zk.NewLock(conn, dir+"/lock", worldACL)
			ws[i] = worker{conn, func() (func(), error) {
				if err := l.Lock(); err != nil {
					return nil, err
				}
				return func() { l.Unlock() }, nil
			}}
		}
	}
	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				unlock, err := w.lock()
				if err != nil {
					b.Error(err)
					return
				}
				data, _, err := w.conn.Get(counterPath)
				if err == nil {
					n, _ := strconv.Atoi(string(data))
					_, err = w.conn.Set(counterPath, []byte(strconv.Itoa(n+1)), -1)
				}
				unlock()
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	data, _, err := admin.Get(counterPath)
	if err != nil {
		b.Fatal(err)
	}
	if got := string(data); got != strconv.Itoa(workers*each) {
		b.Errorf("counter = %s, want %d", got, workers*each)
	}
	b.ReportMetric(float64(workers*each)/elapsed.Seconds(), "incr/s")
	b.StartTimer()
}
