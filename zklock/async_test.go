package zklock

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
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
	// The gate goes on once every lock is held: held while locks were
	// still being taken (seconds on a loaded machine), the first leases'
	// renewals outlived their validity and the leases ended (stop 20's CI).
	// Now every lease's renewal joins within one renewal interval.
	roundGate.Store(&gate)
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

// A renewal in flight when the driver closes is still answered: its round
// (held at the test hook until Close has ended the session) goes on the
// closed connection, and done is called with driver.ErrClosed. A renewal
// started after Close is answered at once.
func TestRenewAsyncAnsweredAcrossClose(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx := context.Background()
	d, err := dialDriver(ctx, servers, Options{Prefix: testRoot, SessionTimeout: testSession}, false)
	if err != nil {
		t.Fatal(err)
	}
	l, _, err := d.Acquire(ctx, driver.Request{Name: "async-close/" + newGUID(), TTL: testSession})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	zl := l.(*zkLock)
	inRound, hold := make(chan struct{}), make(chan struct{})
	gate := func(renewal bool, _ int) {
		if renewal {
			close(inRound)
			<-hold
		}
	}
	roundGate.Store(&gate)
	defer roundGate.Store(nil)

	type answer struct {
		v   driver.Validity
		err error
	}
	answers := make(chan answer, 2)
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	zl.RenewAsync(rctx, func(v driver.Validity, err error) { answers <- answer{v, err} })
	<-inRound
	roundGate.Store(nil)
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	<-zl.sess.lost // Close has ended the session; it waits for the round
	select {
	case a := <-answers:
		t.Fatalf("renewal answered while its round was held: %+v, %v", a.v, a.err)
	default:
	}
	close(hold)
	select {
	case a := <-answers:
		if !errors.Is(a.err, driver.ErrClosed) {
			t.Errorf("renewal in flight across Close: %+v, %v; want ErrClosed", a.v, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a renewal in flight when the driver closed was not answered in 10 s")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	zl.RenewAsync(rctx, func(v driver.Validity, err error) { answers <- answer{v, err} })
	select {
	case a := <-answers:
		if !errors.Is(a.err, driver.ErrLockLost) {
			t.Errorf("renewal after Close: %+v, %v; want ErrLockLost", a.v, a.err)
		}
	default:
		t.Error("a renewal after Close was not answered before RenewAsync returned")
	}
}
