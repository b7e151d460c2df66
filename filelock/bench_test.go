package filelock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/scenario"

	"golang.org/x/sys/unix"
)

// BenchmarkDriver runs dlock's scenarios (drivertest.RunBenchmarks); the
// counter is a file next to the lock files.
//
//	go test -run '^$' -bench . -benchmem ./filelock
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, benchHarness{b.TempDir()})
}

type benchHarness struct{ dir string }

func (h benchHarness) MakeDriver(context.Context) (driver.Driver, error) { return open(h.dir) }
func (h benchHarness) Close()                                            {}

func (h benchHarness) Counter(driver.Driver) drivertest.Counter {
	return scenario.FileCounter(h.dir)
}

// BenchmarkUncontended: what Lock+Unlock through the portable API
// (BenchmarkDriver/Uncontended) is made of: the floor, a bare
// open+flock+unlock+close of the same file; the floor plus a token; the
// driver without the portable lease around it.
func BenchmarkUncontended(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	b.Run("floor", func(b *testing.B) {
		path := filepath.Join(dir, "floor")
		b.ReportAllocs()
		for b.Loop() {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				b.Fatal(err)
			}
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			f.Close()
		}
	})
	// The least a fenced file lock does: the floor plus reading and
	// writing the token.
	b.Run("floor+token", func(b *testing.B) {
		path := filepath.Join(dir, "floor-token")
		b.ReportAllocs()
		buf := make([]byte, 32)
		for b.Loop() {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				b.Fatal(err)
			}
			n, _ := f.ReadAt(buf, 0)
			f.WriteAt(buf[:max(n, 8)], 0)
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			f.Close()
		}
	})
	// The driver alone, without the portable lease around it.
	b.Run("driver", func(b *testing.B) {
		d, err := open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		req := driver.Request{Name: "bench-driver", TTL: time.Minute}
		b.ReportAllocs()
		for b.Loop() {
			l, _, err := d.Acquire(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReaders: 10 goroutines of one client take the lock, hold it
// for hold (the work done under it) and let go, as readers (RLock) and as
// a Mutex: the readers' throughput over the mutex's is what the read-write
// lock buys (issue 14 asks for at least 5 times).
//
//	go test -run '^$' -bench Readers ./filelock
func BenchmarkReaders(b *testing.B) {
	const workers, hold = 10, time.Millisecond
	for _, mode := range []string{"mutex", "rlock"} {
		b.Run(mode, func(b *testing.B) {
			c, err := New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			acquire := c.Mutex("readers").Lock
			if mode == "rlock" {
				acquire = c.RWMutex("readers").RLock
			}
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						l, err := acquire(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						time.Sleep(hold)
						l.Unlock(ctx)
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
		})
	}
}

// BenchmarkSemaphore: 20 goroutines of one client take one of 5 permits
// (or the Mutex), hold it for 1 ms and let go; permits in use never go
// above 5 (checked), and the throughput is compared with the mutex's.
//
//	go test -run '^$' -bench Semaphore ./filelock
func BenchmarkSemaphore(b *testing.B) {
	const workers, permits, hold = 20, 5, time.Millisecond
	for _, mode := range []string{"mutex", "semaphore"} {
		b.Run(mode, func(b *testing.B) {
			c, err := New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			acquire, limit := c.Mutex("sem").Lock, int32(1)
			if mode == "semaphore" {
				acquire, limit = c.Semaphore("sem", permits).Acquire, permits
			}
			ctx := context.Background()
			var next atomic.Int64
			var in, most atomic.Int32
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						l, err := acquire(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						n := in.Add(1)
						if n > limit {
							b.Errorf("%d holders of %d", n, limit)
						}
						for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
						}
						time.Sleep(hold)
						in.Add(-1)
						l.Unlock(ctx)
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
			b.ReportMetric(float64(most.Load()), "most-held")
		})
	}
}

// BenchmarkManyNames: g workers (a client each, as the peer benchmark's
// many-names scenario has 16) lock and unlock random names among 1000,
// against the floor, a bare open+flock+close of the name's file; one op is
// a grant. "fresh" names are new to the directory, as in the peer
// benchmark (each name's first grant makes its files); "warm" ones were
// all taken once before the timer starts. The sweep over g shows what
// serializes distinct names.
//
//	go test -run '^$' -bench ManyNames ./filelock
func BenchmarkManyNames(b *testing.B) {
	const names = 1000
	for _, names0 := range []string{"fresh", "warm"} {
		for _, g := range []int{1, 2, 16} {
			b.Run(fmt.Sprintf("%s/floor/g=%d", names0, g), func(b *testing.B) {
				dir := b.TempDir()
				ls := make([]scenario.Locker, g)
				for i := range ls {
					ls[i] = scenario.LockerFunc{LockFunc: func(_ context.Context, name string) (scenario.Held, error) {
						f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
						if err != nil {
							return scenario.Held{}, err
						}
						if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
							f.Close()
							return scenario.Held{}, err
						}
						return scenario.Held{Unlock: func(context.Context) error { return f.Close() }}, nil
					}}
				}
				runManyNames(b, ls, names, names0 == "warm")
			})
			b.Run(fmt.Sprintf("%s/driver/g=%d", names0, g), func(b *testing.B) {
				dir := b.TempDir()
				ls := make([]scenario.Locker, g)
				for i := range ls {
					c, err := New(dir)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { c.Close() })
					l := scenario.Client(c)
					l.CloseFunc = nil
					ls[i] = l
				}
				runManyNames(b, ls, names, names0 == "warm")
			})
		}
	}
}

func runManyNames(b *testing.B, ls []scenario.Locker, names int, warm bool) {
	if warm {
		for i := range names {
			h, err := ls[0].Lock(b.Context(), fmt.Sprintf("many-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			h.Unlock(b.Context())
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	g, err := scenario.ManyNames(b.Context(), ls, "many", names, scenario.Budget{N: b.N})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(g.PerSec(), "grants/s")
}
