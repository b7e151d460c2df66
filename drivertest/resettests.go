package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// testConnectionReset: a connection reset once, after which the client
// reconnects at once (a "blip"), costs nothing but the reconnect. Each
// subtest resets a driver's connections at one moment of a lock's life.
func testConnectionReset(t *testing.T, s *suite) {
	f := s.faulter(t)
	t.Run("ThenLock", func(t *testing.T) { testResetThenLock(t, s, f) })
	t.Run("ThenUnlock", func(t *testing.T) { testResetThenUnlock(t, s, f) })
	t.Run("ReleaseReplyLost", func(t *testing.T) { testResetReleaseReplyLost(t, s, f) })
	t.Run("WhileHeld", func(t *testing.T) { testResetWhileHeld(t, s, f) })
	kinds := append([]string{""}, f.ConnKinds()...)
	for _, kind := range kinds {
		label := kind
		if label == "" {
			label = "all"
		}
		t.Run("Waiter/"+label, func(t *testing.T) { testResetWaiter(t, s, f, kind) })
	}
}

// connBound says whether s's engine frees a lock with the connection that
// holds it.
func (s *suite) connBound() bool {
	cb, ok := s.h.(ConnBound)
	return ok && cb.LocksDieWithConnection()
}

// reset resets d's connections of a kind once.
func reset(t *testing.T, f Faulter, d driver.Driver, kind string) {
	t.Helper()
	undo, err := f.Fault(d, kind, Fault{Reset: true})
	if err != nil {
		if kind != "" {
			t.Skipf("harness cannot reset %q connections alone: %v", kind, err)
		}
		t.Fatalf("Fault(Reset): %v", err)
	}
	undo()
}

// testResetThenLock: a Lock or TryLock right after a reset succeeds: a
// connection the reset killed is not handed to it as if alive.
func testResetThenLock(t *testing.T, s *suite, f Faulter) {
	name := lockName(t)
	a, da := s.client(t)
	unlock(t, s.lock(t, a, name)) // the pool holds a connection now
	reset(t, f, da, "")
	l, err := a.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock right after a reset: %v", err)
	}
	unlock(t, l)
	reset(t, f, da, "")
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	l, err = a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock right after a reset: %v", err)
	}
	unlock(t, l)
}

// testResetThenUnlock: an Unlock right after a reset releases (it waits for
// the reconnect within its ctx) and the name is free at once, not after the
// TTL. Where the reset freed the lock (ConnBound), Unlock may report the
// loss instead.
func testResetThenUnlock(t *testing.T, s *suite, f Faulter) {
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, da := s.client(t, ttl)
	b, _ := s.client(t, ttl)
	la := s.lock(t, a, name)
	reset(t, f, da, "")
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	err := la.Unlock(ctx)
	t.Logf("Unlock right after a reset: %v after %v", err, time.Since(start))
	if err != nil && !(s.connBound() && errors.Is(err, dlock.ErrLockLost)) {
		t.Fatalf("Unlock right after a reset: %v", err)
	}
	tried := time.Now()
	lb, err := b.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock by another client after the Unlock: %v (the release did not happen)", err)
	}
	if d := time.Since(tried); d > slack {
		t.Errorf("TryLock by another client after the Unlock took %v: the name was not free at once", d)
	}
	unlock(t, lb)
}

// testResetReleaseReplyLost: the release reaches the engine but its reply is
// lost to a reset. Unlock must report what happened — the release — not a
// loss, and the name is free. Where the reset frees the lock anyway
// (ConnBound) the moment does not arise in a form the driver could tell.
func testResetReleaseReplyLost(t *testing.T, s *suite, f Faulter) {
	if s.connBound() {
		t.Skip("the engine frees a lock with its connection: a reset after the release frees nothing more, and the driver need not tell which freed it")
	}
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, da := s.client(t, ttl)
	b, _ := s.client(t, ttl)
	c, _ := s.client(t, ttl)
	la := s.lock(t, a, name)
	chB := s.lockAsync(s.ctx, b, name)
	waitQueued(t, a, name, 1)
	undo, err := f.Fault(da, "", Fault{Stall: true, Dir: ToClient})
	if err != nil {
		t.Fatalf("Fault: %v", err)
	}
	defer undo()
	unlocked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		unlocked <- la.Unlock(ctx)
	}()
	// B's grant, far inside the 30 s TTL, is the event that says the
	// release reached the engine.
	rb := await(t, chB, 10*time.Second, "Lock of the waiter while the holder's release reply is stalled")
	if rb.err != nil {
		t.Fatalf("waiter's Lock: %v (the release did not reach the engine)", rb.err)
	}
	select {
	case err := <-unlocked:
		t.Fatalf("Unlock returned %v while its reply was stalled", err)
	default:
	}
	reset(t, f, da, "")
	undo()
	select {
	case err := <-unlocked:
		if err != nil {
			t.Errorf("Unlock whose release went through but whose reply was lost to a reset = %v, want nil", err)
		}
	case <-time.After(20*time.Second + slack):
		t.Fatal("Unlock still running 20 s after the reset")
	}
	unlock(t, rb.l)
	lc, err := c.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock after both released: %v", err)
	}
	unlock(t, lc)
}

// testResetWhileHeld: a lease held across a reset stays held: the engine
// still holds it a TTL after the reset (so a renewal after the reset went
// through), Done stays open, and Unlock then succeeds. Where the reset frees
// the lock (ConnBound), the loss is signalled at once and the name is free.
func testResetWhileHeld(t *testing.T, s *suite, f Faulter) {
	ttl := s.shortTTL()
	name := lockName(t)
	a, da := s.client(t, dlock.WithTTL(ttl))
	b, _ := s.client(t, dlock.WithTTL(ttl))
	la := s.lock(t, a, name)
	reset(t, f, da, "")
	if s.connBound() {
		mustBeDone(t, la, slack, dlock.ErrLockLost)
		lb, err := b.Mutex(name).TryLock(s.ctx)
		if err != nil {
			t.Fatalf("TryLock after the reset freed the lock: %v", err)
		}
		unlock(t, lb)
		return
	}
	// The period under test: past the TTL, the engine would have let the
	// name go unless a renewal made after the reset reached it.
	time.Sleep(ttl + ttl/2)
	mustHold(t, la)
	s.mustNotAcquire(t, b, name)
	mustHold(t, la)
	unlock(t, la)
	lb, err := b.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock after the Unlock: %v", err)
	}
	unlock(t, lb)
}

// testResetWaiter: a waiter whose connections (all, or one kind) are reset
// while it waits is still granted promptly when the holder releases after
// the reset — far inside the TTL, so by the release, not by an expiry.
func testResetWaiter(t *testing.T, s *suite, f Faulter, kind string) {
	name := lockName(t)
	ttl := dlock.WithTTL(30 * time.Second)
	a, _ := s.client(t, ttl)
	b, db := s.client(t, ttl)
	la := s.lock(t, a, name)
	chB := s.lockAsync(s.ctx, b, name)
	waitQueued(t, a, name, 1)
	reset(t, f, db, kind)
	start := time.Now()
	unlock(t, la)
	r := await(t, chB, 5*time.Second+slack, "Lock of a waiter whose connections were reset, after the release")
	if r.err != nil {
		t.Fatalf("waiter's Lock after its connections were reset: %v", r.err)
	}
	t.Logf("granted %v after the release", r.at.Sub(start))
	unlock(t, r.l)
}
