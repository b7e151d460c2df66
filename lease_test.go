package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/memlock"
)

func newStubClient(t *testing.T, s driver.Driver, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := dlock.NewClient(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// blockUntilDone is an engine call that never answers: it returns only when
// its context ends.
func blockUntilDone(ctx context.Context) error {
	<-ctx.Done()
	return driver.Unavailable(ctx.Err())
}

// TestUnlockEndsLeaseBeforeTheRoundTrip: Done closes the moment Unlock is
// called, while the engine has not answered yet.
func TestUnlockEndsLeaseBeforeTheRoundTrip(t *testing.T) {
	answer := make(chan struct{})
	s := &stub{release: func(ctx context.Context) error {
		select {
		case <-answer:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	c := newStubClient(t, s, dlock.WithTTL(10*time.Second))
	l, err := c.Mutex("x").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	unlocked := make(chan error, 1)
	go func() { unlocked <- l.Unlock(context.Background()) }()
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done still open 5 s after Unlock was called, with the release unanswered")
	}
	if !errors.Is(l.Err(), dlock.ErrNotHeld) {
		t.Errorf("Err = %v, want ErrNotHeld", l.Err())
	}
	close(answer)
	if err := <-unlocked; err != nil {
		t.Errorf("Unlock = %v", err)
	}
}

// TestUnlockIsBounded: with an engine that never answers, Unlock with no
// deadline of its own returns within the lock's TTL, reporting the failure.
func TestUnlockIsBounded(t *testing.T) {
	s := &stub{release: blockUntilDone}
	ttl := 500 * time.Millisecond
	c := newStubClient(t, s, dlock.WithTTL(ttl))
	l, err := c.Mutex("x").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = l.Unlock(context.Background())
	if d := time.Since(start); d > ttl+time.Second {
		t.Errorf("Unlock took %v with the engine silent, want at most about the TTL %v", d, ttl)
	}
	if err == nil || !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("Unlock = %v, want the release's failure (ErrUnavailable)", err)
	}
	mustBeClosed(t, l.Done())
}

// TestCloseIsBounded: Close with an engine that never answers returns within
// its documented bound and ends every lease first.
func TestCloseIsBounded(t *testing.T) {
	s := &stub{release: blockUntilDone}
	c, err := dlock.NewClient(s, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var leases []*dlock.Lease
	for _, n := range []string{"a", "b", "c"} {
		l, err := c.Mutex(n).Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	for _, l := range leases {
		select {
		case <-l.Done():
		case <-time.After(time.Second):
			t.Fatalf("lease %q still open 1 s into Close", l.Name())
		}
	}
	select {
	case err := <-closed:
		if err == nil {
			t.Errorf("Close = nil, want the releases' failure reported")
		}
	case <-time.After(dlock.CloseTimeout + 2*time.Second):
		t.Fatalf("Close still running after %v (bound %v)", time.Since(start), dlock.CloseTimeout)
	}
}

// TestFailedReleaseIsRetried: a release that fails (the engine unreachable
// for a moment, or the caller's ctx already cancelled) is retried in the
// background until the engine has the lock back.
func TestFailedReleaseIsRetried(t *testing.T) {
	var fails atomic.Int32
	fails.Store(2)
	released := make(chan struct{})
	s := &stub{release: func(ctx context.Context) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if fails.Add(-1) >= 0 {
			return driver.Unavailable(errors.New("connection refused"))
		}
		close(released)
		return nil
	}}
	c := newStubClient(t, s, dlock.WithTTL(2*time.Second))
	l, err := c.Mutex("x").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Unlock(cancelled); err == nil {
		t.Errorf("Unlock with a cancelled context = nil, want its failure reported")
	}
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatalf("release not retried to success within 5 s (%d attempts)", s.releases.Load())
	}
}

// TestLockRidesOutAnOutage: a blocking Lock retries errors marked
// unavailable; TryLock reports them at once; other errors end the wait.
func TestLockRidesOutAnOutage(t *testing.T) {
	var down atomic.Int32
	down.Store(4)
	errDown := driver.Unavailable(errors.New("dial tcp: connection refused"))
	s := &stub{acquire: func(ctx context.Context, req driver.Request) error {
		if down.Add(-1) >= 0 {
			return errDown
		}
		return nil
	}}
	c := newStubClient(t, s)
	if _, err := c.Mutex("x").TryLock(context.Background()); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryLock during the outage = %v, want ErrUnavailable at once", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Mutex("x").Lock(ctx)
	if err != nil {
		t.Fatalf("Lock across the outage = %v, want the lock after it", err)
	}
	l.Unlock(ctx)

	// An outage longer than the caller waits: ctx's error joined with the
	// engine's.
	down.Store(1 << 30)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	_, err = c.Mutex("x").Lock(ctx2)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Lock past its deadline during an outage = %v, want DeadlineExceeded joined with the engine's error", err)
	}
	if n := s.acquires.Load(); n > 40 {
		t.Errorf("%d attempts in the outage: the retry does not back off", n)
	}

	// A permanent error is reported at once.
	errBad := errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")
	s.acquire = func(context.Context, driver.Request) error { return errBad }
	start := time.Now()
	if _, err := c.Mutex("y").Lock(context.Background()); !errors.Is(err, errBad) {
		t.Fatalf("Lock with a permanent engine error = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a permanent error took %v to report", d)
	}
}

// TestLossWaitsOutTheRenewalInFlight: a loss declared while a renewal is in
// flight (here: the maximum hold time) releases only after that renewal
// returned (the driver contract: Release never overlaps Renew).
func TestLossWaitsOutTheRenewalInFlight(t *testing.T) {
	s := &stub{renew: blockUntilDone}
	c := newStubClient(t, s, dlock.WithTTL(time.Second), dlock.WithRenewInterval(100*time.Millisecond),
		dlock.WithMaxHold(300*time.Millisecond))
	l, err := c.Mutex("x").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lease not lost with renewals unanswered")
	}
	// The release after the loss happens on its own goroutine; Close waits for it.
	c.Close()
	if s.releases.Load() == 0 {
		t.Errorf("no release after the loss")
	}
	if s.overlapped() {
		t.Errorf("Release ran while a Renew was in flight")
	}
}

// TestDoReleasesOnPanic: a panicking fn does not keep the lock.
func TestDoReleasesOnPanic(t *testing.T) {
	e := memlock.NewEngine()
	a, _ := e.NewClient()
	b, _ := e.NewClient()
	defer a.Close()
	defer b.Close()
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the panic of fn", p)
			}
		}()
		dlock.Do(context.Background(), a, "x", func(context.Context, *dlock.Lease) error { panic("boom") })
	}()
	l, err := b.Mutex("x").TryLock(context.Background())
	if err != nil {
		t.Fatalf("TryLock after fn panicked: %v", err)
	}
	l.Unlock(context.Background())
}

func TestDurationBounds(t *testing.T) {
	c, _ := memlock.New()
	defer c.Close()
	for _, tc := range []struct {
		opt  dlock.Option
		word string
	}{
		{dlock.WithTTL(time.Nanosecond), "TTL"},
		{dlock.WithTTL(dlock.MinTTL - 1), "TTL"},
		{dlock.WithRenewInterval(time.Nanosecond), "renew interval"},
	} {
		_, err := c.Mutex("x", tc.opt).Lock(context.Background())
		if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.word) {
			t.Errorf("Lock with a too small %s = %v, want ErrInvalidArgument naming it", tc.word, err)
		}
	}
	l, err := c.Mutex("x", dlock.WithTTL(dlock.MinTTL)).Lock(context.Background())
	if err != nil {
		t.Fatalf("Lock with TTL = MinTTL: %v", err)
	}
	l.Unlock(context.Background())
}

func mustBeClosed(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	default:
		t.Fatal("Done still open")
	}
}

// TestOpenNeverShowsACredential: no error from Open quotes a password, for
// any registered scheme and malformed URLs of every kind.
func TestOpenNeverShowsACredential(t *testing.T) {
	const pw = "S3cr"
	for _, scheme := range append(dlock.Schemes(), "nosuch") {
		for _, u := range []string{
			scheme + "://:" + pw + "/et+pw@127.0.0.1:6379/0",
			scheme + "://user:" + pw + "et@127.0.0.1:notaport/0",
			scheme + "://user:" + pw + "%zz@127.0.0.1:6379/0",
			scheme + "://user:" + pw + "et@[::1/0",
			scheme + "://user:" + pw + "et@host:1/x?password=" + pw + "x",
			scheme + "://user:" + pw + "et@ho st/",
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := dlock.Open(ctx, u)
			cancel()
			if err == nil {
				c.Close()
				continue
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("Open(%s…) error shows the password: %v", scheme, err)
			}
		}
	}
}

// TestRenewIntervalFollowsAShorterGrant: when the engine grants less than
// the TTL asked (a capped session timeout), renewals come at most half the
// usable window apart, so one failed renewal leaves time for another.
func TestRenewIntervalFollowsAShorterGrant(t *testing.T) {
	granted := 1200 * time.Millisecond
	s := &stub{}
	renewed := make(chan time.Time, 16)
	s.renew = func(ctx context.Context) error {
		select {
		case renewed <- time.Now():
		default:
		}
		return nil
	}
	c := newStubClient(t, &shortGrant{stub: s, ttl: granted}, dlock.WithTTL(3*time.Second))
	start := time.Now()
	l, err := c.Mutex("x").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	select {
	case at := <-renewed:
		// The configured interval is 1s (TTL/3); usable = 1.2s - margin
		// scaled to 120ms = 1.08s, of which half is 540ms.
		if d := at.Sub(start); d > 800*time.Millisecond {
			t.Errorf("first renewal %v after the grant of a %v TTL (asked 3s), want about 540ms", d, granted)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no renewal")
	}
	mustHoldLease(t, l)
}

// shortGrant grants a fixed TTL whatever was asked, as a capped ZooKeeper
// session timeout does.
type shortGrant struct {
	*stub
	ttl time.Duration
}

func (g *shortGrant) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	l, v, err := g.stub.Acquire(ctx, req)
	v.TTL = g.ttl
	return &shortLock{l.(*stubLock), g.ttl}, v, err
}

type shortLock struct {
	*stubLock
	ttl time.Duration
}

func (l *shortLock) Renew(ctx context.Context) (driver.Validity, error) {
	v, err := l.stubLock.Renew(ctx)
	v.TTL = l.ttl
	return v, err
}

func mustHoldLease(t *testing.T, l *dlock.Lease) {
	t.Helper()
	if err := l.Err(); err != nil {
		t.Fatalf("lease ended: %v", err)
	}
}

// TestExpiredGrantIsNotALease: a grant whose validity had run out by the
// time it reached the portable layer (a waiter whose session or lease
// expired while it waited: etcd#11007's zombie candidate) is renewed once:
// if the engine confirms the lock is still ours it is a lease with the
// renewed validity; otherwise it is given back, a blocking Lock asks again
// and TryLock reports the loss, instead of returning a lease that is
// already over.
func TestExpiredGrantIsNotALease(t *testing.T) {
	const ttl = time.Second
	var grants atomic.Int32
	expiredFirst := func(req driver.Request) driver.Validity {
		if grants.Add(1) == 1 {
			return driver.Validity{Since: time.Now().Add(-2 * ttl), TTL: req.TTL}
		}
		return driver.Validity{Since: time.Now(), TTL: req.TTL}
	}

	// The engine no longer holds it for us: given back, asked again.
	s := &stub{validity: expiredFirst, renew: func(context.Context) error { return dlock.ErrLockLost }}
	c := newStubClient(t, s, dlock.WithTTL(ttl))
	l, err := c.Mutex("x").Lock(t.Context())
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if l.Token() != 2 || l.Err() != nil {
		t.Fatalf("Lock returned token %d (Err %v); want the second grant, token 2, live", l.Token(), l.Err())
	}
	if n := s.releases.Load(); n != 1 {
		t.Errorf("expired grant released %d times, want 1", n)
	}
	l.Unlock(t.Context())
	grants.Store(0)
	tl, err := c.Mutex("y").TryLock(t.Context())
	if !errors.Is(err, dlock.ErrLockLost) {
		if tl != nil {
			tl.Unlock(t.Context())
		}
		t.Fatalf("TryLock with an expired grant = %v, %v; want ErrLockLost", tl, err)
	}

	// The engine confirms it is still ours: the renewed grant is the lease.
	grants.Store(0)
	s2 := &stub{validity: expiredFirst}
	c2 := newStubClient(t, s2, dlock.WithTTL(ttl))
	l, err = c2.Mutex("x").Lock(t.Context())
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	defer l.Unlock(t.Context())
	if l.Token() != 1 || l.Err() != nil || s2.renews.Load() != 1 || s2.releases.Load() != 0 {
		t.Fatalf("Lock returned token %d (Err %v) after %d renewals and %d releases; want token 1, live, renewed once, never released",
			l.Token(), l.Err(), s2.renews.Load(), s2.releases.Load())
	}
}

// TestGrantWithNoTimeLeftIsNotAFullTTL: a driver that reports a grant's
// validity with Since set and no TTL left (TTL <= 0) promises nothing; the
// portable layer must not read it as a full TTL, but prove the lock still
// held by a renewal, or give it back.
func TestGrantWithNoTimeLeftIsNotAFullTTL(t *testing.T) {
	for _, left := range []time.Duration{0, -time.Millisecond} {
		t.Run(fmt.Sprint(left), func(t *testing.T) {
			noTime := func(req driver.Request) driver.Validity {
				return driver.Validity{Since: time.Now(), TTL: left}
			}
			s := &stub{validity: noTime, renew: func(context.Context) error { return dlock.ErrLockLost }}
			c := newStubClient(t, s, dlock.WithTTL(time.Second))
			l, err := c.Mutex("x").TryLock(t.Context())
			if !errors.Is(err, dlock.ErrLockLost) {
				if l != nil {
					l.Unlock(t.Context())
				}
				t.Fatalf("TryLock with a grant of no time left: lease %v, err %v; want ErrLockLost (the renewal found it gone)", l != nil, err)
			}
			if s.renews.Load() != 1 || s.releases.Load() != 1 {
				t.Errorf("%d renewals, %d releases; want the grant proven once and given back", s.renews.Load(), s.releases.Load())
			}
		})
	}
}
