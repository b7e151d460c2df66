package etcdlock

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestSemaphoreContention: workers on clients of their own take permits in
// a loop: never more than n at once, and n do hold at once.
func TestSemaphoreContention(t *testing.T) {
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := benchName(t)
	const n, workers, rounds = 3, 10, 10
	g := newGrants(n)
	var wg sync.WaitGroup
	for range workers {
		c := newLockClient(t, newClient(t, eps))
		wg.Go(func() {
			s := c.Semaphore(name, n)
			for range rounds {
				l, err := s.Acquire(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				g.grant(l, false)
				time.Sleep(2 * time.Millisecond)
				g.release(l)
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	g.check(t)
	t.Logf("%d grants, at most %d permits held at once", g.n, g.peak)
	if g.n != workers*rounds {
		t.Errorf("%d grants, want %d", g.n, workers*rounds)
	}
	if g.peak != n {
		t.Errorf("at most %d permits held at once, want %d", g.peak, n)
	}
}

// TestSemaphoreAnyReleaseLetsIn: the permit given back need not be the
// oldest: a waiter is let in by whichever holder leaves first, at once, in
// the order the waiters came.
func TestSemaphoreAnyReleaseLetsIn(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	const n = 3
	c := newLockClient(t, cli)
	s := c.Semaphore(name, n)
	var held []*dlock.Lease
	for range n {
		l, err := s.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	if l, err := s.TryAcquire(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire with %d of %d permits held: %v, %v; want ErrNotAcquired", n, n, l, err)
	}
	if keys := queueKeys(t, ctx, cli, name); len(keys) != n {
		t.Fatalf("queue %q after a failed TryAcquire, want the %d holders' keys alone", keys, n)
	}
	got := make([]chan *dlock.Lease, 2)
	for i := range got {
		got[i] = make(chan *dlock.Lease, 1)
		w := newLockClient(t, cli)
		go func() {
			l, err := w.Semaphore(name, n).Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got[i] <- l
		}()
		waitQueued(t, ctx, cli, name, n+i+1)
	}
	// The newest holder leaves, then the middle one: the first waiter,
	// then the second, get in, each at once.
	for i, h := range []int{n - 1, 1} {
		start := time.Now()
		if err := held[h].Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		l := within(t, got[i], 3*time.Second, "waiter after a permit came back")
		t.Logf("waiter %d granted %v after holder %d left", i, time.Since(start), h)
		select {
		case l2 := <-got[1-i]:
			t.Fatalf("waiter %d granted too (token %d): more than %d permits", 1-i, l2.Token(), n)
		default:
		}
		held = append(held, l)
	}
	for _, i := range []int{0, 3, 4} {
		if err := held[i].Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSemaphoreLimitMismatch: a name held or awaited under one limit
// refuses another limit, and a lock; a lock's name refuses a semaphore.
// The error names both limits and leaves no key behind.
func TestSemaphoreLimitMismatch(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, b := newLockClient(t, cli), newLockClient(t, cli)

	p, err := a.Semaphore(name, 3).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type try struct {
		what string
		fn   func(context.Context) (*dlock.Lease, error)
		want []string
	}
	refused := func(tries []try) {
		t.Helper()
		for _, tr := range tries {
			l, err := tr.fn(ctx)
			if !errors.Is(err, dlock.ErrInvalidArgument) {
				t.Errorf("%s: %v, %v; want ErrInvalidArgument", tr.what, l, err)
				if l != nil {
					l.Unlock(ctx)
				}
				continue
			}
			for _, w := range tr.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not say %q", tr.what, err, w)
				}
			}
		}
		if keys := queueKeys(t, ctx, cli, name); len(keys) != 1 {
			t.Errorf("queue %q after refusals, want the holder's key alone", keys)
		}
	}
	refused([]try{
		{"Semaphore(5).Acquire", b.Semaphore(name, 5).Acquire, []string{"limit = 5", "want 3", "a semaphore of 3 permits"}},
		{"Semaphore(30).TryAcquire", b.Semaphore(name, 30).TryAcquire, []string{"limit = 30", "want 3"}},
		{"Mutex.Lock", b.Mutex(name).Lock, []string{"limit = 0", "want 3", "not as a lock"}},
		{"Mutex.TryLock", b.Mutex(name).TryLock, []string{"limit = 0", "want 3"}},
		{"RWMutex.RLock", b.RWMutex(name).RLock, []string{"limit = 0", "want 3"}},
		{"RWMutex.TryRLock", b.RWMutex(name).TryRLock, []string{"limit = 0", "want 3"}},
	})
	if err := p.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	r, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("a reader once the semaphore's permits are gone: %v", err)
	}
	refused([]try{
		{"Semaphore(3).Acquire", b.Semaphore(name, 3).Acquire, []string{"limit = 3", "want 0", "as a lock"}},
		{"Semaphore(1).TryAcquire", b.Semaphore(name, 1).TryAcquire, []string{"limit = 1", "want 0"}},
	})
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSemaphoreCrashedHolder: the permit of a holder that stops renewing
// (its process gone, its connection cut) comes back when its lease
// expires, within the TTL and a margin, to a waiter that was watching.
func TestSemaphoreCrashedHolder(t *testing.T) {
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	const ttl = 2 * time.Second // the test cluster's minimum
	ca := newConn(t, eps)
	da := mustDriver(t, ca.cli)
	db := mustDriver(t, newClient(t, eps))
	req := driver.Request{Name: name, TTL: ttl, Wait: true, Limit: 2}
	for range 2 {
		if _, _, err := da.Acquire(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing renews a driver's lease but the portable layer (absent
	// here) and a waiter: cutting the holder off keeps its Close from
	// revoking it at cleanup, which could free the permits early.
	crashed := time.Now()
	if _, err := ca.fault("", drivertest.Fault{Down: true}); err != nil {
		t.Fatal(err)
	}
	l, _, err := db.Acquire(ctx, req)
	took := time.Since(crashed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("permit granted %v after its holder stopped renewing (TTL %v)", took, ttl)
	if took > ttl+1500*time.Millisecond {
		t.Errorf("permit came back %v after its holder stopped, want within TTL %v + 1.5 s", took, ttl)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSemaphoreCancelledWait: a waiter that gives up leaves no key that
// would hold a place in the queue: the next waiter gets the next permit.
func TestSemaphoreCancelledWait(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, b, c := newLockClient(t, cli), newLockClient(t, cli), newLockClient(t, cli)
	h, err := a.Semaphore(name, 1).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() {
		_, err := b.Semaphore(name, 1).Acquire(wctx)
		werr <- err
	}()
	waitQueued(t, ctx, cli, name, 2)
	got := make(chan *dlock.Lease, 1)
	go func() {
		l, err := c.Semaphore(name, 1).Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitQueued(t, ctx, cli, name, 3)
	wcancel()
	if err := within(t, werr, 5*time.Second, "cancelled waiter"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
	}
	if keys := queueKeys(t, ctx, cli, name); len(keys) != 2 {
		t.Errorf("queue %q after the cancelled wait, want holder and one waiter", keys)
	}
	start := time.Now()
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	l := within(t, got, 3*time.Second, "next waiter")
	t.Logf("next waiter granted %v after the release", time.Since(start))
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSemaphorePermitLoss: a permit whose key is deleted is told, and its
// place goes to a waiter.
func TestSemaphorePermitLoss(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, b := newLockClient(t, cli), newLockClient(t, cli)
	s := a.Semaphore(name, 2)
	p1, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *dlock.Lease, 1)
	go func() {
		l, err := b.Semaphore(name, 2).Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitQueued(t, ctx, cli, name, 3)
	keys := queueKeys(t, ctx, cli, name)
	if _, err := cli.Delete(ctx, keys[1]); err != nil { // p2's
		t.Fatal(err)
	}
	within(t, p2.Done(), 5*time.Second, "lost permit's Done")
	if !errors.Is(p2.Err(), dlock.ErrLockLost) {
		t.Errorf("lost permit's Err = %v, want ErrLockLost", p2.Err())
	}
	l := within(t, got, 5*time.Second, "waiter after a permit's loss")
	select {
	case <-p1.Done():
		t.Errorf("the other permit was lost too: %v", p1.Err())
	default:
	}
	for _, x := range []*dlock.Lease{p1, l} {
		if err := x.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	p2.Unlock(ctx)
}
