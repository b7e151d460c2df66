package drivertest

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// The semaphore suite: run when the driver offers semaphores.

// testSemaphoreLimit: n holders at once, the next waits and gets the first
// permit given back; tokens increase in grant order.
func testSemaphoreLimit(t *testing.T, s *suite) {
	c0, _ := s.client(t)
	s.needs(t, c0, false, true)
	const n = 3
	name := lockName(t)
	var held []*dlock.Lease
	for i := range n {
		c, _ := s.client(t)
		l := s.take(t, "Acquire", c.Semaphore(name, n).Acquire)
		if i > 0 && l.Token() <= held[i-1].Token() {
			t.Errorf("permit tokens %d then %d, want increasing", held[i-1].Token(), l.Token())
		}
		held = append(held, l)
	}
	l, err := c0.Semaphore(name, n).TryAcquire(s.ctx)
	mustNotAcquire(t, "TryAcquire with every permit held", l, err)
	ch := async(s.ctx, c0.Semaphore(name, n).Acquire)
	waitQueued(t, c0, name, 1)
	stillWaiting(t, ch, "Acquire with every permit held")
	unlock(t, held[1])
	next := granted(t, ch, "Acquire after a permit came back")
	if next.Token() <= held[n-1].Token() {
		t.Errorf("token %d after %d", next.Token(), held[n-1].Token())
	}
	for _, l := range []*dlock.Lease{held[0], held[2]} {
		mustHold(t, l)
		unlock(t, l)
	}
	unlock(t, next)
}

// testSemaphoreExclusion: workers of several clients take permits over
// and over; never more than n hold at once.
func testSemaphoreExclusion(t *testing.T, s *suite) {
	c0, _ := s.client(t)
	s.needs(t, c0, false, true)
	const n, workers, rounds = 2, 6, 6
	name := lockName(t)
	clients := []*dlock.Client{c0}
	for range 2 {
		c, _ := s.client(t)
		clients = append(clients, c)
	}
	var holders, most atomic.Int32
	var wg sync.WaitGroup
	for i := range workers {
		sem := clients[i%len(clients)].Semaphore(name, n)
		wg.Go(func() {
			for range rounds {
				l, err := sem.Acquire(s.ctx)
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				h := holders.Add(1)
				if h > n {
					t.Errorf("%d holders of %d permits", h, n)
				}
				for m := most.Load(); h > m && !most.CompareAndSwap(m, h); m = most.Load() {
				}
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				holders.Add(-1)
				if err := l.Unlock(context.Background()); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("at most %d of %d permits held at once", most.Load(), n)
}

// testSemaphoreMismatch: a client that disagrees on n, or takes the name as
// a lock, gets a clear error while the semaphore is in use.
func testSemaphoreMismatch(t *testing.T, s *suite) {
	a, _ := s.client(t)
	s.needs(t, a, false, true)
	b, _ := s.client(t)
	name := lockName(t)
	la := s.take(t, "Acquire", a.Semaphore(name, 7).Acquire)
	for what, try := range map[string]func(context.Context) (*dlock.Lease, error){
		"Semaphore(name, 11).TryAcquire": b.Semaphore(name, 11).TryAcquire,
		"Semaphore(name, 11).Acquire":    b.Semaphore(name, 11).Acquire,
		"Mutex(name).TryLock":            b.Mutex(name).TryLock,
	} {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		l, err := try(ctx)
		cancel()
		if !errors.Is(err, dlock.ErrInvalidArgument) {
			if l != nil {
				unlock(t, l)
			}
			t.Errorf("%s while it is held with n = 7: %v, want ErrInvalidArgument", what, err)
			continue
		}
		// The semaphore's doc: the error names both N.
		if msg := strings.ReplaceAll(err.Error(), name, "NAME"); strings.HasPrefix(what, "Semaphore") &&
			(!strings.Contains(msg, "7") || !strings.Contains(msg, "11")) {
			t.Errorf("%s while it is held with n = 7: %q does not name both 7 and 11", what, err)
		}
	}
	mustHold(t, la)
	unlock(t, la)
	if _, err := b.Semaphore(name, 0).TryAcquire(s.ctx); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Semaphore(name, 0).TryAcquire = %v, want ErrInvalidArgument", err)
	}
}

// testSemaphoreCancelledWait: a waiter that gives up leaves nothing that
// keeps the next waiter out.
func testSemaphoreCancelledWait(t *testing.T, s *suite) {
	a, _ := s.client(t)
	s.needs(t, a, false, true)
	b, _ := s.client(t)
	c, _ := s.client(t)
	name := lockName(t)
	la := s.take(t, "Acquire", a.Semaphore(name, 1).Acquire)
	bctx, bcancel := context.WithCancel(s.ctx)
	chb := async(bctx, b.Semaphore(name, 1).Acquire)
	waitQueued(t, a, name, 1)
	chc := async(s.ctx, c.Semaphore(name, 1).Acquire)
	waitQueued(t, a, name, 2)
	bcancel()
	if r := await(t, chb, 5*time.Second, "cancelled Acquire"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Acquire = %v, want context.Canceled", r.err)
	}
	unlock(t, la)
	lc := granted(t, chc, "Acquire behind a cancelled waiter")
	unlock(t, lc)
}

// testVanishedPermitHolder: a crashed holder's permit comes back within its
// TTL, after its lease has ended.
func testVanishedPermitHolder(t *testing.T, s *suite) {
	cr, ok := s.h.(Crasher)
	if !ok {
		t.Skip("harness cannot cut a client off (no Crasher)")
	}
	ttl := s.shortTTL()
	a, da := s.client(t, dlock.WithTTL(ttl))
	s.needs(t, a, false, true)
	b, _ := s.client(t, dlock.WithTTL(ttl))
	name := lockName(t)
	la := s.take(t, "Acquire", a.Semaphore(name, 1).Acquire)
	ch := async(s.ctx, b.Semaphore(name, 1).Acquire)
	waitQueued(t, b, name, 1)
	next := s.afterCrash(t, cr, da, la, ch, ttl, "Acquire after the holder vanished")
	unlock(t, next)
}
