package pglock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// A holder whose session the server ends while the holder cannot hear of
// it (its connection stalled, then its backend terminated) still believes
// it holds the lock until its deadline. The lock is free on the server at
// once; whoever is granted it next, waiting or trying, in either mode, must
// not return before the holder's Done closes: it waits out the lease in
// the key's row, which the grant reads in the same statement.
func TestVanishedHolder(t *testing.T) {
	url := testserver.Postgres(t)
	for _, tc := range []struct {
		name         string
		holder, next dlock.Mode
		wait         bool
		_            struct{}
	}{
		{name: "writer-then-waiting-writer", holder: dlock.Exclusive, next: dlock.Exclusive, wait: true},
		{name: "writer-then-trying-writer", holder: dlock.Exclusive, next: dlock.Exclusive},
		{name: "writer-then-waiting-reader", holder: dlock.Exclusive, next: dlock.Shared, wait: true},
		{name: "writer-then-trying-reader", holder: dlock.Exclusive, next: dlock.Shared},
		{name: "reader-then-waiting-writer", holder: dlock.Shared, next: dlock.Exclusive, wait: true},
		{name: "reader-then-trying-writer", holder: dlock.Shared, next: dlock.Exclusive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, url)
			ttl := 2 * time.Second
			da, err := h.MakeDriver(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			a, err := dlock.NewClient(da, dlock.WithTTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			b, _ := newClient(t, url, dlock.WithTTL(ttl))
			name := lockName(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			take := func(c *dlock.Client, mode dlock.Mode, wait bool) (*dlock.Lease, error) {
				rw := c.RWMutex(name)
				switch {
				case mode == dlock.Shared && wait:
					return rw.RLock(ctx)
				case mode == dlock.Shared:
					return rw.TryRLock(ctx)
				case wait:
					return rw.Lock(ctx)
				}
				return rw.TryLock(ctx)
			}
			la, err := take(a, tc.holder, true)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan *dlock.Lease, 1)
			if tc.wait {
				go func() {
					l, err := take(b, tc.next, true)
					if err != nil {
						t.Errorf("Lock: %v", err)
					}
					got <- l
				}()
				waitWaiters(t, b, name, 1)
			}
			p, err := h.proxy(da)
			if err != nil {
				t.Fatal(err)
			}
			faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, drivertest.Fault{Stall: true})
			if err := h.ForceLoss(ctx, name); err != nil {
				t.Fatal(err)
			}
			gone := time.Now()
			if !tc.wait {
				// The server frees the lock when the terminated backend
				// exits: a blocking lock on the side says when.
				conn := pgxConnectAs(t, url)
				if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1), pg_advisory_unlock($1)", Key(name)); err != nil {
					t.Fatal(err)
				}
				l, err := take(b, tc.next, false)
				if err != nil {
					t.Fatalf("try after the holder's session ended: %v", err)
				}
				got <- l
			}
			lb := <-got
			if lb == nil {
				return
			}
			select {
			case <-la.Done():
			default:
				t.Errorf("granted %v after the holder's session ended, while its lease was not Done", time.Since(gone))
			}
			if lb.Token() <= la.Token() {
				t.Errorf("token %d after %d", lb.Token(), la.Token())
			}
			if d := time.Since(gone); d > ttl+time.Second {
				t.Errorf("granted %v after the holder's session ended, want within the TTL %v", d, ttl)
			}
			t.Logf("granted %v after the holder's session ended (TTL %v)", time.Since(gone), ttl)
			if err := lb.Unlock(ctx); err != nil {
				t.Error(err)
			}
		})
	}
}

// A clean release hands over at once, in either mode: the waiter's grant,
// made at the unlock, waits on the key's row for the release's commit and
// then finds the lease ended, never mistaking it for a vanished holder's
// (which would cost it the TTL, here 30 s).
func TestCleanHandoff(t *testing.T) {
	url := testserver.Postgres(t)
	ttl := 30 * time.Second
	a, _ := newClient(t, url, dlock.WithTTL(ttl))
	b, _ := newClient(t, url, dlock.WithTTL(ttl))
	for _, tc := range []struct {
		name         string
		holder, next dlock.Mode
	}{
		{"writer-to-writer", dlock.Exclusive, dlock.Exclusive},
		{"writer-to-reader", dlock.Exclusive, dlock.Shared},
		{"reader-to-writer", dlock.Shared, dlock.Exclusive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := lockName(t)
			take := func(ctx context.Context, c *dlock.Client, mode dlock.Mode) (*dlock.Lease, error) {
				if mode == dlock.Shared {
					return c.RWMutex(name).RLock(ctx)
				}
				return c.RWMutex(name).Lock(ctx)
			}
			for round := range 10 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				la, err := take(ctx, a, tc.holder)
				if err != nil {
					cancel()
					t.Fatalf("round %d: %v", round, err)
				}
				got := make(chan error, 1)
				go func() {
					lb, err := take(ctx, b, tc.next)
					if err == nil {
						err = lb.Unlock(ctx)
					}
					got <- err
				}()
				waitWaiters(t, a, name, 1)
				if err := la.Unlock(ctx); err != nil {
					t.Fatalf("round %d: Unlock: %v", round, err)
				}
				if err := <-got; err != nil {
					t.Fatalf("round %d: the waiter, within 5 s of the holder's lock (TTL %v): %v", round, ttl, err)
				}
				cancel()
			}
		})
	}
}

// A Release that its context cuts short may still release the lock (the
// statement finishes in the background); a repeated Release must then say
// the lock is no longer this owner's (ErrLockLost), not succeed: success
// would date the release to the repeat, and the safety suite's lease model
// caught just that (latency-holder: an OK release of a lease another
// holder had been granted since).
func TestReleaseRepeatedAfterCutShort(t *testing.T) {
	url := testserver.Postgres(t)
	h := newHarness(t, url)
	d, err := h.MakeDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	name := lockName(t)
	req := driver.Request{Name: name, TTL: 5 * time.Second}
	// A first cycle prepares the statements on the session, so that the
	// faulted Release sends its statement at once.
	l, _, err := d.Acquire(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l, _, err = d.Acquire(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	p, err := h.proxy(d)
	if err != nil {
		t.Fatal(err)
	}
	// The statement runs at once; its answer comes after the context ends
	// (too late for the server to cancel it).
	undo := faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, drivertest.Fault{Delay: 300 * time.Millisecond, Dir: drivertest.ToClient})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = l.Release(ctx)
	cancel()
	if err == nil {
		t.Fatal("Release within 100 ms through a 300 ms delay succeeded: the test proves nothing")
	}
	undo()
	err = l.Release(context.Background())
	if !errors.Is(err, driver.ErrLockLost) {
		t.Fatalf("repeated Release after one cut short = %v, want ErrLockLost", err)
	}
	d2, err := h.MakeDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	req.Wait = false
	l2, _, err := d2.Acquire(context.Background(), req)
	if err != nil {
		t.Fatalf("the lock after the release: %v", err)
	}
	if err := l2.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A waiter whose client gave up while cut off (its cancellation never
// reached the server) stays in the server's queue, and may be granted the
// lock when its turn comes, for a client that is gone. That grant must not
// hold up the waiters behind it once the server sees the client gone: the
// grant after a wait writes no lease (the client confirms it in a
// statement of its own), so the next waiter is served at once, not a TTL
// (30 s here) later. Conformance CancelledWaitCleanupFails hit this race
// when the wait's statement wrote the lease with the grant.
func TestZombieGrant(t *testing.T) {
	url := testserver.Postgres(t)
	ttl := 30 * time.Second
	h := newHarness(t, url)
	a, _ := newClient(t, url, dlock.WithTTL(ttl))
	db, err := h.MakeDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := dlock.NewClient(db, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	c, _ := newClient(t, url, dlock.WithTTL(ttl))
	name := lockName(t)
	la := mustLock(t, a, name)
	bctx, bcancel := context.WithCancel(context.Background())
	chB := make(chan error, 1)
	go func() {
		l, err := b.Mutex(name).Lock(bctx)
		if err == nil {
			l.Unlock(context.Background())
		}
		chB <- err
	}()
	waitWaiters(t, a, name, 1)
	p, err := h.proxy(db)
	if err != nil {
		t.Fatal(err)
	}
	undo := faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, drivertest.Fault{Stall: true})
	bcancel()
	if err := <-chB; err == nil {
		t.Fatal("the cancelled Lock succeeded")
	}
	chC := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := c.Mutex(name).Lock(ctx)
		if err == nil {
			err = l.Unlock(context.Background())
		}
		chC <- err
	}()
	waitWaiters(t, a, name, 2) // the gone client's backend, still queued, and c
	if err := la.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The gone client's backend is granted the lock now; it learns its
	// client is gone when the cut ends.
	// (Its grant is committed when the name's token moves past a's.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Token > la.Token() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gone client's backend was not granted the lock within 10 s (token %d)", st.Token)
		}
		time.Sleep(5 * time.Millisecond) // polling the server, which has no event for it
	}
	undo()
	start := time.Now()
	if err := <-chC; err != nil {
		t.Fatalf("the waiter behind a gone client's grant: %v after %v", err, time.Since(start))
	}
	t.Logf("served %v after the cut ended", time.Since(start))
}
