package drivertest

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// Clients and grants of the contention test.
const (
	contenders     = 8
	grantsPerTaker = 50
)

// testMutualExclusion: many clients, each with its own connection, do a
// non-atomic read-modify-write under the lock; the counter must be exact,
// at most one holder at a time, and tokens strictly increasing in the order
// the critical sections ran.
func testMutualExclusion(t *testing.T, s *suite) {
	name := lockName(t)
	var (
		counter   atomic.Int64 // read and written in two steps: lost updates show
		inside    atomic.Int32
		maxInside atomic.Int32
		lastToken atomic.Uint64
		wg        sync.WaitGroup
	)
	clients := make([]*dlock.Client, contenders)
	for i := range clients {
		clients[i], _ = s.client(t)
	}
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := c.Mutex(name)
			for range grantsPerTaker {
				ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
				l, err := m.Lock(ctx)
				cancel()
				if err != nil {
					t.Errorf("Lock: %v", err)
					return
				}
				n := inside.Add(1)
				for {
					old := maxInside.Load()
					if n <= old || maxInside.CompareAndSwap(old, n) {
						break
					}
				}
				if prev := lastToken.Load(); l.Token() <= prev {
					t.Errorf("token %d granted after token %d", l.Token(), prev)
				}
				lastToken.Store(l.Token())
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				inside.Add(-1)
				if err := l.Unlock(context.Background()); err != nil {
					t.Errorf("Unlock: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := maxInside.Load(); got != 1 {
		t.Errorf("max holders at once = %d, want 1", got)
	}
	if got, want := counter.Load(), int64(contenders*grantsPerTaker); got != want {
		t.Errorf("counter = %d after %d locked increments: %d lost", got, want, want-got)
	}
}

// testTokensIncrease: tokens grow across clients and across a client's
// restart.
func testTokensIncrease(t *testing.T, s *suite) {
	name := lockName(t)
	var last uint64
	for i := range 6 {
		c, _ := s.client(t)
		l := s.lock(t, c, name)
		if l.Token() <= last {
			t.Fatalf("grant %d: token %d after %d, want strictly increasing", i, l.Token(), last)
		}
		last = l.Token()
		unlock(t, l)
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func testTryLock(t *testing.T, s *suite) {
	name := lockName(t)
	a, _ := s.client(t, dlock.WithTTL(30*time.Second))
	b, _ := s.client(t, dlock.WithTTL(30*time.Second))
	la, err := a.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock on a free lock: %v", err)
	}
	start := time.Now()
	s.mustNotAcquire(t, b, name)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("TryLock on a held lock took %v, want an answer at once", d)
	}
	unlock(t, la)
	lb, err := b.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock after release: %v", err)
	}
	if lb.Token() <= la.Token() {
		t.Errorf("token %d after %d", lb.Token(), la.Token())
	}
	unlock(t, lb)
}

// testCancelWhileWaiting: a wait that ends by deadline or cancel returns the
// context's error and leaves nothing queued that would delay the next taker.
func testCancelWhileWaiting(t *testing.T, s *suite) {
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, _ := s.client(t, ttl)
	b, _ := s.client(t, ttl)
	c, _ := s.client(t, ttl)
	la := s.lock(t, a, name)

	ctx, cancel := context.WithTimeout(s.ctx, 300*time.Millisecond)
	_, err := b.Mutex(name).Lock(ctx)
	cancel()
	if err != context.DeadlineExceeded {
		t.Fatalf("Lock past its deadline = %v, want context.DeadlineExceeded itself", err)
	}

	ctx, cancel = context.WithCancel(s.ctx)
	ch := s.lockAsync(ctx, b, name)
	waitQueued(t, a, name, 1)
	cancel()
	if r := await(t, ch, 5*time.Second, "cancelled Lock"); r.err != context.Canceled {
		t.Fatalf("cancelled Lock = %v, want context.Canceled itself", r.err)
	}
	waitQueued(t, a, name, 0)

	// Were b's entries left behind, c would wait behind them for 30 s.
	ch = s.lockAsync(s.ctx, c, name)
	waitQueued(t, a, name, 1)
	unlock(t, la)
	r := await(t, ch, 5*time.Second, "Lock after cancelled waiters")
	if r.err != nil {
		t.Fatalf("Lock after cancelled waiters: %v", r.err)
	}
	unlock(t, r.l)
}

func testDoubleUnlock(t *testing.T, s *suite) {
	c, _ := s.client(t)
	l := s.lock(t, c, lockName(t))
	unlock(t, l)
	mustBeDone(t, l, time.Second, dlock.ErrNotHeld)
	if err := l.Unlock(context.Background()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("second Unlock = %v, want ErrNotHeld", err)
	}
}

// testLossDetection: the engine drops the lock; the holder learns, the next
// taker gets it, and the old holder's Unlock changes nothing.
func testLossDetection(t *testing.T, s *suite) {
	lf, ok := s.h.(LossForcer)
	if !ok {
		t.Skip("harness cannot make the engine drop a lock (no LossForcer)")
	}
	ttl := s.shortTTL()
	name := lockName(t)
	a, _ := s.client(t, dlock.WithTTL(ttl))
	b, _ := s.client(t, dlock.WithTTL(ttl))
	c, _ := s.client(t, dlock.WithTTL(ttl))
	la := s.lock(t, a, name)
	ch := s.lockAsync(s.ctx, b, name)
	if err := lf.ForceLoss(s.ctx, name); err != nil {
		t.Fatalf("ForceLoss: %v", err)
	}
	mustBeDone(t, la, ttl, dlock.ErrLockLost)
	if cause := context.Cause(la.Context()); !errors.Is(cause, dlock.ErrLockLost) {
		t.Errorf("context.Cause = %v, want ErrLockLost", cause)
	}
	r := await(t, ch, 2*ttl+5*time.Second, "waiter after loss")
	if r.err != nil {
		t.Fatalf("waiter after loss: %v", r.err)
	}
	if r.l.Token() <= la.Token() {
		t.Errorf("token %d after %d", r.l.Token(), la.Token())
	}
	if err := la.Unlock(context.Background()); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Unlock of a lost lease = %v, want ErrLockLost", err)
	}
	mustHold(t, r.l)
	s.mustNotAcquire(t, c, name)
	unlock(t, r.l)
}

// testVanishedHolder: a holder cut off without Unlock is replaced within
// TTL plus margin, and, where the engine keeps the lock until the TTL, the
// cut-off holder learns it lost the lock before the next one is granted.
func testVanishedHolder(t *testing.T, s *suite) {
	cr, ok := s.h.(Crasher)
	if !ok {
		t.Skip("harness cannot cut a client off (no Crasher)")
	}
	ttl := s.shortTTL()
	name := lockName(t)
	a, da := s.client(t, dlock.WithTTL(ttl))
	b, _ := s.client(t, dlock.WithTTL(ttl))
	la := s.lock(t, a, name)
	ch := s.lockAsync(s.ctx, b, name)
	waitQueued(t, b, name, 1)
	next := s.afterCrash(t, cr, da, la, ch, ttl, "waiter after the holder vanished")
	if next.Token() <= la.Token() {
		t.Errorf("token %d after %d", next.Token(), la.Token())
	}
	unlock(t, next)
}

// testRenewalKeepsLock: a holder keeps the lock for 3 TTLs while another
// waits.
func testRenewalKeepsLock(t *testing.T, s *suite) {
	ttl := s.shortTTL()
	name := lockName(t)
	a, _ := s.client(t, dlock.WithTTL(ttl))
	b, _ := s.client(t, dlock.WithTTL(ttl))
	la := s.lock(t, a, name)
	ctx, cancel := context.WithTimeout(s.ctx, 3*ttl)
	defer cancel()
	if l, err := b.Mutex(name).Lock(ctx); err != context.DeadlineExceeded {
		if err == nil {
			l.Unlock(context.Background())
		}
		t.Fatalf("waiter during 3 TTLs of renewal: %v, want context.DeadlineExceeded", err)
	}
	mustHold(t, la)
	unlock(t, la)
}

// testEventDrivenHandoff: with a 30 s TTL a waiter gets a released lock well
// under a second later: it woke on an event, not on expiry or a slow poll.
func testEventDrivenHandoff(t *testing.T, s *suite) {
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, _ := s.client(t, ttl)
	b, _ := s.client(t, ttl)
	var worst time.Duration
	for range 5 {
		la := s.lock(t, a, name)
		ch := s.lockAsync(s.ctx, b, name)
		waitQueued(t, a, name, 1)
		start := time.Now()
		unlock(t, la)
		r := await(t, ch, 10*time.Second, "waiter after release")
		if r.err != nil {
			t.Fatalf("waiter after release: %v", r.err)
		}
		worst = max(worst, r.at.Sub(start))
		unlock(t, r.l)
	}
	if worst > time.Second {
		t.Errorf("slowest of 5 handoffs took %v, want well under a second", worst)
	}
	t.Logf("slowest of 5 handoffs: %v", worst)
}

func testCloseWhileWaiting(t *testing.T, s *suite) {
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, _ := s.client(t, ttl)
	b, _ := s.client(t, ttl)
	c, _ := s.client(t, ttl)
	la := s.lock(t, a, name)
	ch := s.lockAsync(s.ctx, b, name)
	waitQueued(t, a, name, 1)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := await(t, ch, 5*time.Second, "Lock on a closed client"); !errors.Is(r.err, dlock.ErrClosed) {
		t.Fatalf("Lock when its client closed = %v, want ErrClosed", r.err)
	}
	if _, err := b.Mutex(name).TryLock(s.ctx); !errors.Is(err, dlock.ErrClosed) {
		t.Fatalf("TryLock on a closed client = %v, want ErrClosed", err)
	}
	ch = s.lockAsync(s.ctx, c, name)
	unlock(t, la)
	r := await(t, ch, 5*time.Second, "Lock after the closed client's wait")
	if r.err != nil {
		t.Fatalf("Lock after the closed client's wait: %v", r.err)
	}
	unlock(t, r.l)
}

// afterCrash cuts d, whose client holds held, off the engine and returns
// what the waiter behind it was granted (ch): within TTL plus margin, and
// not before held's lease ended (unless the engine frees at once).
func (s *suite) afterCrash(t *testing.T, cr Crasher, d driver.Driver, held *dlock.Lease, ch <-chan result, ttl time.Duration, what string) *dlock.Lease {
	t.Helper()
	margin := ttl / 10
	start := time.Now()
	atOnce, err := cr.Crash(s.ctx, d)
	if err != nil {
		t.Fatalf("Crash: %v", err)
	}
	r := await(t, ch, ttl+margin+5*time.Second, what)
	if r.err != nil {
		t.Fatalf("%s: %v", what, r.err)
	}
	// One second of slack for scheduling on a loaded machine.
	if d := r.at.Sub(start); d > ttl+margin+time.Second {
		t.Errorf("%s: granted %v after the cut, want within TTL %v + margin %v", what, d, ttl, margin)
	}
	if !atOnce {
		select {
		case <-held.Done():
		default:
			t.Errorf("%s: granted before the cut-off holder's lease ended", what)
		}
	}
	mustBeDone(t, held, ttl+time.Second, dlock.ErrLockLost)
	return r.l
}
