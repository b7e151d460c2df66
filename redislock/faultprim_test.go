package redislock

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestPrimitivesUnderFaults: readers and writers, and a semaphore's
// permits, of three clients on one name while the first client's
// connections are cut, slowed or stalled: every grant is checked against
// every live lease (holders), and only the faulted client may lose a lease.
// The single-node scripts' give-backs, refusals of late attempts and
// hand-overs are what is under test, for shared holds as for the mutex.
func TestPrimitivesUnderFaults(t *testing.T) {
	addrs := testserver.Redis(t)
	const ttl = 2 * time.Second
	faults := map[string]func(ctx context.Context, apply func(drivertest.Fault) func()){
		"reset": func(ctx context.Context, apply func(drivertest.Fault) func()) {
			for sleep(ctx, ttl/3+rand.N(ttl/3)) {
				apply(drivertest.Fault{Down: true})()
			}
		},
		"delay-replies": func(ctx context.Context, apply func(drivertest.Fault) func()) {
			defer apply(drivertest.Fault{Delay: ttl / 2, Dir: drivertest.ToClient})()
			<-ctx.Done()
		},
		"stall": func(ctx context.Context, apply func(drivertest.Fault) func()) {
			for sleep(ctx, ttl/2) {
				undo := apply(drivertest.Fault{Stall: true})
				sleep(ctx, ttl+ttl/2)
				undo()
			}
		},
	}
	for _, limit := range []int{0, 2} {
		prim := "rw"
		if limit > 0 {
			prim = "semaphore"
		}
		for fname, inject := range faults {
			t.Run(prim+"/"+fname, func(t *testing.T) {
				h := newHarness(addrs[:1])
				defer h.Close()
				name := uniqueName(t)
				var cs []*dlock.Client
				var d0 any
				for i := range 3 {
					d, err := h.MakeDriver(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					c, err := dlock.NewClient(d, dlock.WithTTL(ttl))
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					if i == 0 {
						d0 = d
					}
					cs = append(cs, c)
				}
				ctx, stop := context.WithTimeout(context.Background(), 5*time.Second)
				defer stop()
				var fwg sync.WaitGroup
				fwg.Go(func() {
					inject(ctx, func(f drivertest.Fault) func() {
						undo, err := h.Fault(d0.(*Driver), "", f)
						if err != nil {
							t.Errorf("Fault: %v", err)
							return func() {}
						}
						return undo
					})
				})
				hs := newHolders(t, limit)
				var mu sync.Mutex
				lost := 0
				var wg sync.WaitGroup
				for i := range 6 {
					c := cs[i%3]
					wg.Go(func() {
						for ctx.Err() == nil {
							shared := limit == 0 && rand.N(3) > 0
							lctx, cancel := context.WithTimeout(ctx, 3*ttl+10*time.Second)
							var l *dlock.Lease
							var err error
							switch {
							case limit > 0:
								l, err = c.Semaphore(name, limit).Acquire(lctx)
							case shared:
								l, err = c.RWMutex(name).RLock(lctx)
							default:
								l, err = c.RWMutex(name).Lock(lctx)
							}
							cancel()
							if err != nil {
								if ctx.Err() == nil && i%3 != 0 {
									t.Errorf("client %d: %v", i%3, err)
								}
								continue
							}
							hs.granted(l, shared)
							select {
							case <-time.After(time.Duration(rand.N(20)) * time.Millisecond):
							case <-l.Done():
							}
							hs.releasing(l)
							uctx, ucancel := context.WithTimeout(context.Background(), ttl+2*time.Second)
							err = l.Unlock(uctx)
							ucancel()
							if errors.Is(err, dlock.ErrLockLost) {
								if i%3 != 0 {
									t.Errorf("client %d (no fault) lost its lease: %v", i%3, err)
								}
								mu.Lock()
								lost++
								mu.Unlock()
							}
						}
					})
				}
				wg.Wait()
				fwg.Wait()
				t.Logf("%d grants, %d made beside another holder, %d leases of the faulted client lost", hs.grants, hs.overlaps, lost)
				if hs.grants == 0 {
					t.Error("no grants")
				}
			})
		}
	}
}
