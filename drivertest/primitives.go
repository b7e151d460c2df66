package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// The suites of the read-write lock and the semaphore. They run when the
// driver's Capabilities say it offers the primitive; otherwise they check
// that the primitive is refused with ErrNotSupported.

// async starts acquire and returns where its result will arrive.
func async(ctx context.Context, acquire func(context.Context) (*dlock.Lease, error)) <-chan result {
	ch := make(chan result, 1)
	go func() {
		l, err := acquire(ctx)
		ch <- result{l, err, time.Now()}
	}()
	return ch
}

func (s *suite) needs(t *testing.T, c *dlock.Client, shared, semaphore bool) {
	t.Helper()
	caps := c.Capabilities()
	if (shared && !caps.Shared) || (semaphore && !caps.Semaphore) {
		t.Skip("the driver does not offer this primitive (Capabilities); NotSupported checks its refusal")
	}
}

// take calls acquire with the suite's context and fails the test if it
// does not return a lease.
func (s *suite) take(t *testing.T, what string, acquire func(context.Context) (*dlock.Lease, error)) *dlock.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	l, err := acquire(ctx)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return l
}

func mustNotAcquire(t *testing.T, what string, l *dlock.Lease, err error) {
	t.Helper()
	if err == nil {
		l.Unlock(context.Background())
		t.Fatalf("%s succeeded, want ErrNotAcquired", what)
	}
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("%s = %v, want ErrNotAcquired", what, err)
	}
}

func granted(t *testing.T, ch <-chan result, what string) *dlock.Lease {
	t.Helper()
	r := await(t, ch, 10*time.Second, what)
	if r.err != nil {
		t.Fatalf("%s: %v", what, r.err)
	}
	return r.l
}

func stillWaiting(t *testing.T, ch <-chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		if r.l != nil {
			r.l.Unlock(context.Background())
		}
		t.Fatalf("%s returned (%v) while it should wait", what, r.err)
	default:
	}
}

// testNotSupported: a primitive the driver does not offer is refused with
// ErrNotSupported, never served as a mutex.
func testNotSupported(t *testing.T, s *suite) {
	c, _ := s.client(t)
	caps := c.Capabilities()
	name := lockName(t)
	if !caps.Shared {
		l, err := c.RWMutex(name).RLock(s.ctx)
		if !errors.Is(err, dlock.ErrNotSupported) {
			if l != nil {
				unlock(t, l)
			}
			t.Errorf("RLock on a driver without Shared = %v, want ErrNotSupported", err)
		}
	}
	if !caps.Semaphore {
		l, err := c.Semaphore(name, 2).TryAcquire(s.ctx)
		if !errors.Is(err, dlock.ErrNotSupported) {
			if l != nil {
				unlock(t, l)
			}
			t.Errorf("Semaphore.TryAcquire on a driver without Semaphore = %v, want ErrNotSupported", err)
		}
	}
	if !caps.Election {
		l, err := c.Election(name).Campaign(s.ctx, "v")
		if !errors.Is(err, dlock.ErrNotSupported) {
			if l != nil {
				unlock(t, l.Lease)
			}
			t.Errorf("Campaign on a driver without Election = %v, want ErrNotSupported", err)
		}
		if _, err := c.Election(name).Leader(s.ctx); !errors.Is(err, dlock.ErrNotSupported) {
			t.Errorf("Leader on a driver without Election = %v, want ErrNotSupported", err)
		}
		if _, err := c.Election(name).Observe(s.ctx); !errors.Is(err, dlock.ErrNotSupported) {
			t.Errorf("Observe on a driver without Election = %v, want ErrNotSupported", err)
		}
	}
	if caps.Shared && caps.Semaphore && caps.Election {
		t.Skip("the driver offers every primitive")
	}
}
