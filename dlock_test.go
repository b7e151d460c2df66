package dlock_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/memlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct{ url, want string }{
		{"nosuch://x", `unknown URL scheme "nosuch"`},
		{"nosuch://x", "mem"}, // lists the registered schemes
		{"nosuch://x", "forgotten import"},
		{"no-scheme", "scheme"},
		{"mem://%zz", "URL"},
		{"mem://x/path", "mem://NAME"},
	}
	for _, tc := range cases {
		_, err := dlock.Open(ctx, tc.url)
		if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want ErrInvalidArgument mentioning %q", tc.url, err, tc.want)
		}
	}
	if _, err := dlock.Open(ctx, "mem://x", dlock.WithTTL(-1)); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Open with TTL -1 = %v, want ErrInvalidArgument", err)
	}
	if _, err := dlock.NewClient(nil); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("NewClient(nil) = %v, want ErrInvalidArgument", err)
	}
}

func TestOpenRedactsPassword(t *testing.T) {
	_, err := dlock.Open(context.Background(), "nosuch://user:s3cret@host")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v shows the password", err)
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		scheme string
		fn     dlock.OpenFunc
	}{
		{"", nil}, {"Upper", nil}, {"mem", nil},
		{"nilopen-test", nil}, // a new scheme: only the nil OpenFunc is wrong
		{"mem", func(context.Context, *url.URL) (driver.Driver, error) { return nil, nil }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", tc.scheme)
				}
			}()
			dlock.Register(tc.scheme, tc.fn)
		}()
	}
}

// TestMaxHold: a lease past its maximum hold time is released and reported
// lost; the next waiter gets the lock.
func TestMaxHold(t *testing.T) {
	e := memlock.NewEngine()
	a, _ := e.NewClient()
	b, _ := e.NewClient()
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	l, err := a.Mutex("job", dlock.WithMaxHold(200*time.Millisecond)).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	lb, err := b.Mutex("job").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Unlock(ctx)
	<-l.Done()
	if !errors.Is(l.Err(), dlock.ErrLockLost) || !strings.Contains(l.Err().Error(), "maximum hold") {
		t.Errorf("Err = %v, want ErrLockLost for the maximum hold time", l.Err())
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("waiter got the lock after %v, want about 200ms", d)
	}
}

// TestCloseEndsLeases: Close releases what the client holds, so others get
// it at once, and the leases report ErrClosed.
func TestCloseEndsLeases(t *testing.T) {
	e := memlock.NewEngine()
	a, _ := e.NewClient(dlock.WithTTL(time.Minute))
	b, _ := e.NewClient()
	defer b.Close()
	ctx := context.Background()
	l, err := a.Mutex("x").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(l.Err(), dlock.ErrClosed) {
		t.Errorf("Err after Close = %v, want ErrClosed", l.Err())
	}
	if err := a.Close(); !errors.Is(err, dlock.ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	lb, err := b.Mutex("x").TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock after the holder's Close: %v", err)
	}
	lb.Unlock(ctx)
}

// TestDoReportsLoss: fn's context is cancelled when the lease is lost and Do
// returns the loss.
func TestDoReportsLoss(t *testing.T) {
	e := memlock.NewEngine()
	c, _ := e.NewClient()
	defer c.Close()
	err := dlock.Do(context.Background(), c, "x", func(ctx context.Context, l *dlock.Lease) error {
		e.Drop("x")
		<-ctx.Done()
		if !errors.Is(context.Cause(ctx), dlock.ErrLockLost) {
			t.Errorf("Cause = %v, want ErrLockLost", context.Cause(ctx))
		}
		return ctx.Err()
	})
	if !errors.Is(err, dlock.ErrLockLost) || !errors.Is(err, context.Canceled) {
		t.Errorf("Do = %v, want ErrLockLost joined with fn's error", err)
	}
}

// TestStatusInput: Status refuses an empty name and a nil ctx, and reports
// a free lock.
func TestStatusInput(t *testing.T) {
	c, _ := memlock.New()
	defer c.Close()
	if _, err := c.Status(context.Background(), ""); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Status(\"\") = %v, want ErrInvalidArgument", err)
	}
	var nilCtx context.Context
	if _, err := c.Status(nilCtx, "x"); !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), "ctx") {
		t.Errorf("Status(nil ctx) = %v, want ErrInvalidArgument naming ctx", err)
	}
	st, err := c.Status(context.Background(), "free")
	if err != nil || st.Held {
		t.Errorf("Status of a free lock = %+v, %v", st, err)
	}
}

// TestStatusListUnsupported: a driver that cannot tell a lock's status or
// list locks says so with ErrNotSupported, which matches
// errors.ErrUnsupported too.
func TestStatusListUnsupported(t *testing.T) {
	c := newStubClient(t, &stub{})
	_, err := c.Status(t.Context(), "x")
	if !errors.Is(err, dlock.ErrNotSupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Status on a driver without it = %v, want ErrNotSupported and errors.ErrUnsupported", err)
	}
	_, err = c.List(t.Context(), "")
	if !errors.Is(err, dlock.ErrNotSupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("List on a driver without it = %v, want ErrNotSupported and errors.ErrUnsupported", err)
	}
}
