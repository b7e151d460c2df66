package zklock

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// The portable layer renews zklock's locks through RenewAsync: while a
// client's renewals are in flight, no goroutine per lock waits for the
// engine. Every renewal round is held at the test hook until all n leases'
// renewals have joined a round (the two in flight, and the one gathering),
// and the goroutines are counted there, with all n renewals in flight.
func TestAsyncRenewalCostsNoGoroutine(t *testing.T) {
	const n, session = 500, 8 * time.Second
	servers := testserver.ZooKeeper(t)
	ctx := context.Background()
	d, err := dialDriver(ctx, servers, Options{Prefix: testRoot, SessionTimeout: session}, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dlock.NewClient(d)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	defer c.Close()
	before := runtime.NumGoroutine()

	var (
		mu       sync.Mutex
		held     int  // renewals in the rounds held here
		sampled  bool // the goroutines were counted
		inFlight int  // renewals in flight when they were
		spent    int  // goroutines then, beyond before
		release  = make(chan struct{})
	)
	gate := func(renewal bool, nodes int) {
		if !renewal {
			return
		}
		mu.Lock()
		if sampled {
			mu.Unlock()
			return
		}
		held += nodes
		mu.Unlock()
		deadline := time.After(20 * time.Second)
		for {
			d.renew.mu.Lock()
			waiting := 0
			if d.renew.next != nil {
				waiting = len(d.renew.next.paths)
			}
			d.renew.mu.Unlock()
			mu.Lock()
			if !sampled && held+waiting >= n {
				sampled, inFlight, spent = true, held+waiting, runtime.NumGoroutine()-before
				close(release)
			}
			mu.Unlock()
			select {
			case <-release:
				return
			case <-deadline:
				return
			case <-time.After(time.Millisecond): // no event says a caller joined
			}
		}
	}
	roundGate.Store(&gate)
	defer roundGate.Store(nil)

	prefix := "async-renew/" + newGUID()
	leases := make([]*dlock.Lease, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				l, err := c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx)
				if err != nil {
					errs <- err
					continue
				}
				leases[i] = l
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("TryLock: %v", err)
	}
	select {
	case <-release:
	case <-time.After(30 * time.Second):
		t.Fatalf("the %d leases' renewals did not all join a round within 30 s", n)
	}
	roundGate.Store(nil)
	mu.Lock()
	t.Logf("%d renewals in flight: %d goroutines beyond the client's %d before the locks", inFlight, spent, before)
	if spent > n/10 {
		t.Errorf("%d renewals in flight cost %d goroutines; want far fewer than one per lock", inFlight, spent)
	}
	mu.Unlock()
	for i, l := range leases {
		if err := l.Err(); err != nil {
			t.Errorf("lease %d ended: %v", i, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock %d: %v", i, err)
		}
	}
}
