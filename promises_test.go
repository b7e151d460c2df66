package dlock_test

// Tests of promises made in the root package's doc comments (Do, NewClient,
// Lock's give-back) that no other test held.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/memlock"
)

// TestDoNotTaken: if the lock cannot be taken, fn does not run and Do
// returns Lock's error.
func TestDoNotTaken(t *testing.T) {
	e := memlock.NewEngine()
	a, _ := e.NewClient()
	b, _ := e.NewClient()
	defer a.Close()
	defer b.Close()
	l, err := a.Mutex("x").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	ran := false
	err = dlock.Do(ctx, b, "x", func(context.Context, *dlock.Lease) error { ran = true; return nil })
	if ran {
		t.Fatal("fn ran while the lock was held elsewhere")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want Lock's context.DeadlineExceeded", err)
	}
}

// TestDoCallerCtxEnds: fn's ctx ends when the caller's does, and the lock
// is released all the same.
func TestDoCallerCtxEnds(t *testing.T) {
	e := memlock.NewEngine()
	c, _ := e.NewClient()
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	err := dlock.Do(ctx, c, "x", func(fctx context.Context, l *dlock.Lease) error {
		cancel()
		select {
		case <-fctx.Done():
			return fctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("fn's ctx still open 10 s after the caller's ended")
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want fn's context.Canceled", err)
	}
	l, err := c.Mutex("x").TryLock(t.Context())
	if err != nil {
		t.Fatalf("the lock after Do: %v", err)
	}
	l.Unlock(t.Context())
}

// TestDoReturnsReleaseError: a failed release is reported, joined with
// fn's error.
func TestDoReturnsReleaseError(t *testing.T) {
	relErr := errors.New("stub: release refused")
	s := &stub{release: func(context.Context) error { return relErr }}
	c := newStubClient(t, s)
	fnErr := errors.New("fn failed")
	err := dlock.Do(t.Context(), c, "x", func(context.Context, *dlock.Lease) error { return fnErr })
	if !errors.Is(err, relErr) || !errors.Is(err, fnErr) {
		t.Fatalf("Do = %v, want both fn's error and the release's", err)
	}
}

// TestDoBadInput: a nil client or fn is refused, naming the argument.
func TestDoBadInput(t *testing.T) {
	for _, tc := range []struct {
		desc string
		c    *dlock.Client
		fn   func(context.Context, *dlock.Lease) error
		want string
	}{
		{"nil client", nil, func(context.Context, *dlock.Lease) error { return nil }, "client"},
		{"nil fn", newStubClient(t, &stub{}), nil, "fn"},
	} {
		err := dlock.Do(t.Context(), tc.c, "x", tc.fn)
		if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Do = %v, want ErrInvalidArgument naming %q", tc.desc, err, tc.want)
		}
	}
}

// TestNewClientBadOptionsClosesDriver: NewClient closes the driver it was
// given when the options are bad, as its doc says.
func TestNewClientBadOptionsClosesDriver(t *testing.T) {
	closed := 0
	s := &stub{close: func() error { closed++; return nil }}
	if _, err := dlock.NewClient(s, dlock.WithTTL(-time.Second)); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Fatalf("NewClient with a negative TTL = %v, want ErrInvalidArgument", err)
	}
	if closed != 1 {
		t.Fatalf("driver closed %d times, want 1", closed)
	}
}

// TestGiveBackFailureReported: a grant that arrives past its validity and
// cannot be proven still ours is given back; if that release fails, the
// error says so (Lock's doc: the lock may stay held until its TTL).
func TestGiveBackFailureReported(t *testing.T) {
	relErr := errors.New("stub: release refused")
	s := &stub{
		validity: func(req driver.Request) driver.Validity {
			return driver.Validity{Since: time.Now().Add(-time.Hour), TTL: req.TTL}
		},
		renew:   func(context.Context) error { return dlock.ErrLockLost },
		release: func(context.Context) error { return relErr },
	}
	c := newStubClient(t, s)
	_, err := c.Mutex("x").TryLock(t.Context())
	if !errors.Is(err, dlock.ErrLockLost) || !errors.Is(err, relErr) {
		t.Fatalf("TryLock of a stale grant whose give-back failed = %v, want ErrLockLost joined with the release's error", err)
	}
	if n := s.releases.Load(); n != 1 {
		t.Fatalf("%d releases, want the one give-back", n)
	}
}
