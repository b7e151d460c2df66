package drivertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// slack absorbs scheduling delays on a loaded machine in the time bounds
// below; every bound is stated as the guarantee plus this.
const slack = 2 * time.Second

// testReleaseFailureFreesTheLock: an Unlock whose release cannot be made
// (its context is cancelled already) still ends the lease at once, reports
// the failure, and the name is free again within TTL + margin.
func testReleaseFailureFreesTheLock(t *testing.T, s *suite) {
	ttl := s.shortTTL()
	name := lockName(t)
	a, _ := s.client(t, dlock.WithTTL(ttl))
	b, _ := s.client(t, dlock.WithTTL(ttl))
	la := s.lock(t, a, name)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := la.Unlock(cancelled)
	select {
	case <-la.Done():
	default:
		t.Fatal("Done still open after Unlock returned")
	}
	t.Logf("Unlock with a cancelled context: %v", err)
	ctx, cancelLock := context.WithTimeout(s.ctx, ttl+ttl/10+slack)
	defer cancelLock()
	lb, err := b.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after a failed release: %v after %v, want the lock within TTL %v + margin", err, time.Since(start), ttl)
	}
	t.Logf("free again %v after the failed release", time.Since(start))
	unlock(t, lb)
}

// testCancelledWaitCleanupFails: a waiter whose wait is cancelled while it is
// cut off from the engine cannot remove what it queued; whatever it left
// must not block the waiters behind it once it is reachable again.
func testCancelledWaitCleanupFails(t *testing.T, s *suite) {
	f := s.faulter(t)
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, _ := s.client(t, ttl)
	b, db := s.client(t, ttl)
	c, _ := s.client(t, ttl)
	la := s.lock(t, a, name)
	bctx, bcancel := context.WithCancel(s.ctx)
	chB := s.lockAsync(bctx, b, name)
	waitQueued(t, a, name, 1)
	undo, err := f.Fault(db, "", Fault{Stall: true})
	if err != nil {
		t.Fatalf("Fault: %v", err)
	}
	bcancel()
	r := await(t, chB, 10*time.Second, "cancelled Lock of a cut-off waiter")
	if r.err == nil {
		r.l.Unlock(context.Background())
		t.Fatal("cancelled Lock succeeded")
	}
	time.Sleep(time.Second) // the cut lasts a moment (a partition, not a sync point)
	undo()
	chC := s.lockAsync(s.ctx, c, name)
	waitQueued(t, a, name, 1)
	start := time.Now()
	unlock(t, la)
	rc := await(t, chC, 10*time.Second+slack, "Lock behind a waiter whose cleanup failed")
	if rc.err != nil {
		t.Fatalf("Lock behind a waiter whose cleanup failed: %v", rc.err)
	}
	t.Logf("handed over %v after the release", rc.at.Sub(start))
	unlock(t, rc.l)
}

// testUnlockWithEngineDown: with the engine unreachable, Unlock ends the
// lease at once, returns within its bound reporting the failure, and the
// name is free within TTL + margin once the engine is reachable again.
func testUnlockWithEngineDown(t *testing.T, s *suite) {
	f := s.faulter(t)
	for _, kind := range []struct {
		name  string
		fault Fault
	}{{"stalled", Fault{Stall: true}}, {"refused", Fault{Down: true}}} {
		t.Run(kind.name, func(t *testing.T) {
			ttl := s.shortTTL()
			name := lockName(t)
			a, da := s.client(t, dlock.WithTTL(ttl))
			b, _ := s.client(t, dlock.WithTTL(ttl))
			la := s.lock(t, a, name)
			undo, err := f.Fault(da, "", kind.fault)
			if err != nil {
				t.Fatalf("Fault: %v", err)
			}
			defer undo()
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- la.Unlock(context.Background()) }()
			select {
			case <-la.Done():
			case <-time.After(slack):
				t.Fatalf("Done still open %v after Unlock with the engine %s", slack, kind.name)
			}
			bound := min(ttl, dlock.CloseTimeout)
			select {
			case err := <-done:
				t.Logf("Unlock returned after %v: %v", time.Since(start), err)
			case <-time.After(bound + slack):
				t.Fatalf("Unlock still running %v after it was called, with the engine %s (bound %v)", bound+slack, kind.name, bound)
			}
			undo()
			healed := time.Now()
			ctx, cancel := context.WithTimeout(s.ctx, ttl+ttl/10+slack)
			defer cancel()
			lb, err := b.Mutex(name).Lock(ctx)
			if err != nil {
				t.Fatalf("Lock after the engine came back: %v after %v", err, time.Since(healed))
			}
			t.Logf("free again %v after the heal", time.Since(healed))
			unlock(t, lb)
		})
	}
}

// testCloseWithEngineDown: Close returns within its bound whatever the
// engine does, and every lease it ends is Done.
func testCloseWithEngineDown(t *testing.T, s *suite) {
	f := s.faulter(t)
	ttl := 10 * time.Second
	name := lockName(t)
	a, da := s.client(t, dlock.WithTTL(ttl))
	l1 := s.lock(t, a, name+"/1")
	l2 := s.lock(t, a, name+"/2")
	undo, err := f.Fault(da, "", Fault{Stall: true})
	if err != nil {
		t.Fatalf("Fault: %v", err)
	}
	defer undo()
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	for _, l := range []*dlock.Lease{l1, l2} {
		select {
		case <-l.Done():
		case <-time.After(slack):
			t.Fatalf("lease %q still open %v into Close", l.Name(), slack)
		}
	}
	select {
	case err := <-closed:
		t.Logf("Close returned after %v: %v", time.Since(start), err)
	case <-time.After(dlock.CloseTimeout + slack):
		t.Fatalf("Close still running after %v with the engine stalled (bound %v)", dlock.CloseTimeout+slack, dlock.CloseTimeout)
	}
}

// testLockAcrossOutage: a blocking Lock started while the engine is
// unreachable gets the lock once it is back; TryLock reports the outage.
func testLockAcrossOutage(t *testing.T, s *suite) {
	f := s.faulter(t)
	name := lockName(t)
	a, da := s.client(t)
	undo, err := f.Fault(da, "", Fault{Down: true})
	if err != nil {
		t.Fatalf("Fault: %v", err)
	}
	defer undo()
	start := time.Now()
	if l, err := a.Mutex(name).TryLock(s.ctx); err == nil {
		l.Unlock(context.Background())
		t.Errorf("TryLock with the engine refusing connections succeeded")
	} else if !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("TryLock with the engine refusing connections = %v, want an error matching ErrUnavailable", err)
	} else if d := time.Since(start); d > 5*time.Second+slack {
		t.Errorf("TryLock took %v to report the outage", d)
	}
	ch := s.lockAsync(s.ctx, a, name)
	time.Sleep(2 * time.Second) // the outage itself
	select {
	case r := <-ch:
		t.Fatalf("Lock returned during the outage: %v", r.err)
	default:
	}
	undo()
	healed := time.Now()
	r := await(t, ch, 10*time.Second+slack, "Lock after the outage")
	if r.err != nil {
		t.Fatalf("Lock across a 2 s outage: %v", r.err)
	}
	t.Logf("granted %v after the heal", r.at.Sub(healed))
	unlock(t, r.l)
}

// testNoOverlapUnderFaults: several clients take turns on one lock while one
// of them has its connections — all, or one kind at a time — delayed,
// stalled or reset. Whenever a lease is granted, every earlier lease must be
// Done already, and tokens must increase in grant order. This is the class
// of fault where a late message or reply acts on a lock that has moved on.
func testNoOverlapUnderFaults(t *testing.T, s *suite) {
	f := s.faulter(t)
	ttl := s.shortTTL()
	kinds := append([]string{""}, f.ConnKinds()...)
	faults := []struct {
		name string
		run  func(ctx context.Context, apply func(Fault) func(), holding <-chan struct{})
	}{
		{"delay-replies", func(ctx context.Context, apply func(Fault) func(), _ <-chan struct{}) {
			defer apply(Fault{Delay: ttl / 2, Dir: ToClient})()
			<-ctx.Done()
		}},
		{"delay-requests", func(ctx context.Context, apply func(Fault) func(), _ <-chan struct{}) {
			defer apply(Fault{Delay: ttl / 4, Dir: ToEngine})()
			<-ctx.Done()
		}},
		{"stall-holder", func(ctx context.Context, apply func(Fault) func(), holding <-chan struct{}) {
			for {
				select {
				case <-holding:
				case <-ctx.Done():
					return
				}
				undo := apply(Fault{Stall: true})
				sleepCtx(ctx, ttl+ttl/2)
				undo()
				sleepCtx(ctx, ttl/2)
			}
		}},
		{"reset", func(ctx context.Context, apply func(Fault) func(), _ <-chan struct{}) {
			for sleepCtx(ctx, ttl/3+rand.N(ttl/3)) {
				apply(Fault{Down: true})()
			}
		}},
	}
	for _, kind := range kinds {
		for _, fl := range faults {
			label := kind
			if label == "" {
				label = "all"
			}
			t.Run(label+"/"+fl.name, func(t *testing.T) {
				runOverlapCheck(t, s, f, kind, ttl, fl.run)
			})
		}
	}
}

func runOverlapCheck(t *testing.T, s *suite, f Faulter, kind string, ttl time.Duration,
	inject func(ctx context.Context, apply func(Fault) func(), holding <-chan struct{})) {
	const clients = 3
	name := lockName(t)
	var (
		cs = make([]*dlock.Client, clients)
		ds = make([]driver.Driver, clients)
	)
	for i := range cs {
		cs[i], ds[i] = s.client(t, dlock.WithTTL(ttl))
	}
	runFor := max(4*time.Second, 2*ttl)
	ctx, stop := context.WithTimeout(s.ctx, runFor)
	defer stop()

	var (
		mu         sync.Mutex
		open       []*dlock.Lease
		lastToken  uint64
		grants     int
		victimLoss int
		violations []string
	)
	register := func(who int, l *dlock.Lease) {
		mu.Lock()
		defer mu.Unlock()
		grants++
		still := open[:0]
		for _, p := range open {
			select {
			case <-p.Done():
			default:
				violations = append(violations, fmt.Sprintf("client %d granted token %d while the lease with token %d was not Done", who, l.Token(), p.Token()))
				still = append(still, p)
			}
		}
		open = append(still, l)
		if l.Token() <= lastToken {
			violations = append(violations, fmt.Sprintf("token %d granted after token %d", l.Token(), lastToken))
		}
		lastToken = max(lastToken, l.Token())
	}

	holding := make(chan struct{}, 1)
	var faultDone sync.WaitGroup
	faultDone.Go(func() {
		inject(ctx, func(fl Fault) func() {
			undo, err := f.Fault(ds[0], kind, fl)
			if err != nil {
				t.Errorf("Fault(%q, %+v): %v", kind, fl, err)
				return func() {}
			}
			return undo
		}, holding)
	})

	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			m := c.Mutex(name)
			for ctx.Err() == nil {
				lctx, cancel := context.WithTimeout(ctx, 3*ttl+10*time.Second)
				l, err := m.Lock(lctx)
				cancel()
				if err != nil {
					if ctx.Err() == nil && i != 0 {
						t.Errorf("client %d: Lock: %v", i, err)
					}
					continue
				}
				register(i, l)
				if i == 0 {
					select {
					case holding <- struct{}{}:
					default:
					}
				}
				select {
				case <-time.After(time.Duration(rand.N(20)) * time.Millisecond):
				case <-l.Done():
				}
				uctx, ucancel := context.WithTimeout(context.Background(), ttl+slack)
				err = l.Unlock(uctx)
				ucancel()
				if errors.Is(err, dlock.ErrLockLost) {
					if i != 0 {
						t.Errorf("client %d (no fault) lost its lease: %v", i, err)
					} else {
						mu.Lock()
						victimLoss++
						mu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	faultDone.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d grants in %v, %d leases of the faulted client lost", grants, runFor, victimLoss)
	for _, v := range violations[:min(len(violations), 10)] {
		t.Error(v)
	}
	if grants < 2 {
		t.Errorf("only %d grants in %v: no contention was tested", grants, runFor)
	}
}

func (s *suite) faulter(t *testing.T) Faulter {
	t.Helper()
	f, ok := s.h.(Faulter)
	if !ok {
		t.Skip("harness cannot put faults on a driver's connections (no Faulter)")
	}
	return f
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}
