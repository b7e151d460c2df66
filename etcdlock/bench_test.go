package etcdlock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlockio/dlock"
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

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

func reportLatencies(b *testing.B, ds []time.Duration, total time.Duration) {
	b.ReportMetric(float64(len(ds))/total.Seconds(), "ops/s")
	b.ReportMetric(float64(pct(ds, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(ds, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkCycle compares an uncontended Lock+Unlock with the raw floor: a
// transaction that creates a key if absent, then a delete.
func BenchmarkCycle(b *testing.B) {
	eps := testserver.Etcd(b)
	ctx := context.Background()
	b.Run("floor", func(b *testing.B) {
		cli := newClient(b, eps)
		key := benchName(b)
		ds := make([]time.Duration, 0, cycles)
		start := time.Now()
		for range cycles {
			t0 := time.Now()
			r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, "")).Commit()
			if err != nil || !r.Succeeded {
				b.Fatalf("put-if-absent: %v", err)
			}
			if _, err := cli.Delete(ctx, key); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportLatencies(b, ds, time.Since(start))
	})
	b.Run("dlock", func(b *testing.B) {
		c, err := New(newClient(b, eps), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		m := c.Mutex(benchName(b))
		ds := make([]time.Duration, 0, cycles)
		start := time.Now()
		for range cycles {
			t0 := time.Now()
			l, err := m.Lock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportLatencies(b, ds, time.Since(start))
	})
	b.Run("concurrency.Mutex", func(b *testing.B) {
		s, err := concurrency.NewSession(newClient(b, eps), concurrency.WithTTL(15))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		m := concurrency.NewMutex(s, benchName(b))
		ds := make([]time.Duration, 0, cycles)
		start := time.Now()
		for range cycles {
			t0 := time.Now()
			if err := m.Lock(ctx); err != nil {
				b.Fatal(err)
			}
			if err := m.Unlock(ctx); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t0))
		}
		reportLatencies(b, ds, time.Since(start))
	})
}

// locker is what the contended benchmarks need of a lock implementation:
// lock (returning a token), unlock.
type locker interface {
	lock(ctx context.Context) (uint64, error)
	unlock(ctx context.Context) error
	close()
}

type dlockLocker struct {
	c *dlock.Client
	m *dlock.Mutex
	l *dlock.Lease
}

func (d *dlockLocker) lock(ctx context.Context) (uint64, error) {
	l, err := d.m.Lock(ctx)
	if err != nil {
		return 0, err
	}
	d.l = l
	return l.Token(), nil
}
func (d *dlockLocker) unlock(ctx context.Context) error { return d.l.Unlock(ctx) }
func (d *dlockLocker) close()                           { d.c.Close() }

type mutexLocker struct {
	s *concurrency.Session
	m *concurrency.Mutex
}

func (m *mutexLocker) lock(ctx context.Context) (uint64, error) {
	if err := m.m.Lock(ctx); err != nil {
		return 0, err
	}
	return uint64(m.m.Header().Revision), nil
}
func (m *mutexLocker) unlock(ctx context.Context) error { return m.m.Unlock(ctx) }
func (m *mutexLocker) close()                           { m.s.Close() }

// kind makes lockers of one implementation on one name, each with a client
// (a connection) of its own, as separate processes would have; keyPrefix is
// where its keys live, to count queued waiters.
type kind struct {
	name      string
	newLocker func(b *testing.B, lockName string) locker
	keyPrefix func(lockName string) string
}

func kinds(eps []string) []kind {
	return []kind{
		{"dlock", func(b *testing.B, name string) locker {
			c, err := New(newClient(b, eps), nil)
			if err != nil {
				b.Fatal(err)
			}
			return &dlockLocker{c: c, m: c.Mutex(name)}
		}, func(name string) string { return (&Driver{root: DefaultPrefix + "/"}).namePrefix(name) }},
		{"concurrency.Mutex", func(b *testing.B, name string) locker {
			s, err := concurrency.NewSession(newClient(b, eps), concurrency.WithTTL(15))
			if err != nil {
				b.Fatal(err)
			}
			return &mutexLocker{s: s, m: concurrency.NewMutex(s, name)}
		}, func(name string) string { return name + "/" }},
	}
}

// BenchmarkHandoff measures the time from the holder's Unlock call to the
// waiter's Lock returning. The holder releases as soon as the waiter's queue
// key is visible, which is how a busy lock is handed on.
func BenchmarkHandoff(b *testing.B) {
	eps := testserver.Etcd(b)
	admin := newClient(b, eps)
	ctx := context.Background()
	for _, k := range kinds(eps) {
		b.Run(k.name, func(b *testing.B) {
			name := benchName(b)
			holder, waiter := k.newLocker(b, name), k.newLocker(b, name)
			defer holder.close()
			defer waiter.close()
			ds := make([]time.Duration, 0, handoffs)
			start := time.Now()
			for range handoffs {
				if _, err := holder.lock(ctx); err != nil {
					b.Fatal(err)
				}
				got := make(chan time.Time, 1)
				go func() {
					if _, err := waiter.lock(ctx); err != nil {
						b.Error(err)
					}
					got <- time.Now()
				}()
				for {
					r, err := admin.Get(ctx, k.keyPrefix(name), clientv3.WithPrefix(), clientv3.WithCountOnly())
					if err != nil {
						b.Fatal(err)
					}
					if r.Count >= 2 {
						break
					}
					time.Sleep(time.Millisecond)
				}
				t0 := time.Now()
				if err := holder.unlock(ctx); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, (<-got).Sub(t0))
				if err := waiter.unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
			reportLatencies(b, ds, time.Since(start))
		})
	}
}

// BenchmarkCounter runs the shared-counter scenario: W workers, each with
// its own connection, each doing K increments of a counter kept in etcd
// (Get, then Put of value+1) under the lock. It checks the counter is exact
// and that grants came in queue order (tokens increasing in grant order).
func BenchmarkCounter(b *testing.B) {
	eps := testserver.Etcd(b)
	admin := newClient(b, eps)
	const perWorker = 100
	for _, workers := range []int{10, 50} {
		for _, k := range kinds(eps) {
			b.Run(fmt.Sprintf("w%d/%s", workers, k.name), func(b *testing.B) {
				ctx := context.Background()
				name := benchName(b)
				counterKey := name + "-counter"
				lockers := make([]locker, workers)
				for i := range lockers {
					lockers[i] = k.newLocker(b, name)
					defer lockers[i].close()
				}
				var (
					mu             sync.Mutex
					tokens         []uint64
					csTime, unTime time.Duration
					wg             sync.WaitGroup
				)
				start := time.Now()
				for _, lk := range lockers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cli := admin
						for range perWorker {
							tok, err := lk.lock(ctx)
							tl := time.Now()
							if err != nil {
								b.Error(err)
								return
							}
							r, err := cli.Get(ctx, counterKey)
							if err != nil {
								b.Error(err)
								return
							}
							n := 0
							if len(r.Kvs) > 0 {
								n, _ = strconv.Atoi(string(r.Kvs[0].Value))
							}
							if _, err := cli.Put(ctx, counterKey, strconv.Itoa(n+1)); err != nil {
								b.Error(err)
								return
							}
							mu.Lock()
							tokens = append(tokens, tok)
							mu.Unlock()
							tu := time.Now()
							if err := lk.unlock(ctx); err != nil {
								b.Error(err)
								return
							}
							mu.Lock()
							csTime += tu.Sub(tl)
							unTime += time.Since(tu)
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				r, err := admin.Get(ctx, counterKey)
				if err != nil || len(r.Kvs) == 0 {
					b.Fatalf("reading counter: %v", err)
				}
				if got := string(r.Kvs[0].Value); got != strconv.Itoa(workers*perWorker) {
					b.Errorf("counter = %s, want %d", got, workers*perWorker)
				}
				for i := 1; i < len(tokens); i++ {
					if tokens[i] <= tokens[i-1] {
						b.Errorf("grant %d: token %d after %d: not in queue order", i, tokens[i], tokens[i-1])
						break
					}
				}
				b.ReportMetric(float64(workers*perWorker)/elapsed.Seconds(), "incr/s")
				n := float64(workers * perWorker)
				b.ReportMetric(float64(csTime.Microseconds())/1000/n, "cs-ms")
				b.ReportMetric(float64(unTime.Microseconds())/1000/n, "unlock-ms")
				b.ReportMetric(float64(elapsed.Microseconds())/1000/n, "per-incr-ms")
				b.ReportMetric(0, "ns/op")
				admin.Delete(ctx, counterKey)
			})
		}
	}
}
