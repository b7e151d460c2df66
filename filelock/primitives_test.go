package filelock

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
)

// TestCloseEndsPrimitiveWaiters: closing the driver ends a waiting reader,
// writer (marked on the turnstile) and permit with ErrClosed, and drops the
// writer's mark and the waiter's claim on the limit.
func TestCloseEndsPrimitiveWaiters(t *testing.T) {
	dir := t.TempDir()
	h, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	hold := func(req driver.Request) driver.Lock {
		t.Helper()
		req.TTL = time.Minute
		l, _, err := h.Acquire(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	reader := hold(driver.Request{Name: "r", Mode: driver.Shared})
	writer := hold(driver.Request{Name: "w"})
	permit := hold(driver.Request{Name: "s", Limit: 1})
	waits := []driver.Request{
		{Name: "r", Wait: true},                      // a writer behind a reader
		{Name: "w", Mode: driver.Shared, Wait: true}, // a reader behind a writer
		{Name: "s", Limit: 1, Wait: true},            // a permit
	}
	done := make(chan error, len(waits))
	for _, req := range waits {
		go func() {
			req.TTL = time.Minute
			l, _, err := d.Acquire(context.Background(), req)
			if err == nil {
				l.Release(context.Background())
			}
			done <- err
		}()
	}
	parked(t, len(waits))
	markedTurnstile(t, dir, "r")
	d.Close()
	for range waits {
		select {
		case err := <-done:
			if !errors.Is(err, driver.ErrClosed) {
				t.Errorf("waiting Acquire after Close = %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting Acquire still waits 5 s after its driver was closed")
		}
	}
	// Nothing of the closed driver's waiters is left.
	if l, _, err := h.Acquire(t.Context(), driver.Request{Name: "r", Mode: driver.Shared, TTL: time.Minute}); err != nil {
		t.Errorf("a reader after the waiting writer's driver closed: %v", err)
	} else {
		l.Release(t.Context())
	}
	permit.Release(t.Context())
	if l, _, err := h.Acquire(t.Context(), driver.Request{Name: "s", Limit: 2, TTL: time.Minute}); err != nil {
		t.Errorf("another limit after the waiter's driver closed and the holder left: %v", err)
	} else {
		l.Release(t.Context())
	}
	reader.Release(t.Context())
	writer.Release(t.Context())
}

// TestUnsupportedRequests: what the driver does not offer is refused with
// ErrNotSupported, never served as a mutex (an unknown mode); a value with
// a shared lock or a permit, or one too long, is an invalid argument.
func TestUnsupportedRequests(t *testing.T) {
	d, err := open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		req  driver.Request
		want error
	}{
		{driver.Request{Name: "x", TTL: time.Minute, Mode: driver.Mode(7)}, driver.ErrNotSupported},
		{driver.Request{Name: "x", TTL: time.Minute, Mode: driver.Shared, Value: "v"}, driver.ErrInvalidArgument},
		{driver.Request{Name: "x", TTL: time.Minute, Limit: 2, Value: "v"}, driver.ErrInvalidArgument},
		{driver.Request{Name: "x", TTL: time.Minute, Value: strings.Repeat("v", maxValue+1)}, driver.ErrInvalidArgument},
	} {
		l, _, err := d.Acquire(t.Context(), tc.req)
		if err == nil {
			l.Release(t.Context())
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("Acquire(%v, %d-byte value) = %v, want %v", tc.req.Mode, len(tc.req.Value), err, tc.want)
		}
	}
}
