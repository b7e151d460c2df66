package pglock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// newClient returns a dlock client on url with a pool of its own, both
// closed at cleanup.
func newClient(t *testing.T, url string, opts ...dlock.Option) (*dlock.Client, *Driver) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	d, err := NewDriver(pool, &Options{Table: testTable})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dlock.NewClient(d, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, d
}

func lockName(t *testing.T) string {
	return fmt.Sprintf("dlocktest/%s/%d", t.Name(), time.Now().UnixNano())
}

func mustLock(t *testing.T, c *dlock.Client, name string) *dlock.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock(%q): %v", name, err)
	}
	return l
}

func mustBeLost(t *testing.T, l *dlock.Lease, within time.Duration, what string) {
	t.Helper()
	start := time.Now()
	select {
	case <-l.Done():
	case <-time.After(within):
		t.Fatalf("%s: Done not closed within %v", what, within)
	}
	if err := context.Cause(l.Context()); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("%s: cause %v, want ErrLockLost", what, err)
	}
	t.Logf("%s: lost after %v", what, time.Since(start))
}

// A server that shuts down or crashes ends every session: the holders
// learn it at once, not at their deadline, and tokens survive the restart.
func TestServerRestartAndCrash(t *testing.T) {
	for _, kind := range []string{"stop", "kill-9"} {
		t.Run(kind, func(t *testing.T) {
			srv := testserver.StartPostgres(t)
			url := testserver.PostgresURL(srv)
			// The leases ended with the server: the first Lock after the
			// restart waits out what their rows still claim (at most the
			// TTL since their last renewal).
			ttl := 3 * time.Second
			c, _ := newClient(t, url, dlock.WithTTL(ttl))
			name := lockName(t)
			l := mustLock(t, c, name)
			r := mustRLockOther(t, c, name+"/r")
			if kind == "stop" {
				srv.Stop()
			} else {
				srv.Kill()
			}
			// At once: well before the first renewal (TTL/3) would find
			// the session gone.
			mustBeLost(t, l, ttl/6, "holder")
			mustBeLost(t, r, ttl/6, "reader")
			testserver.RestartPostgres(t, srv)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			restarted := time.Now()
			l2, err := c.Mutex(name).Lock(ctx)
			if err != nil {
				t.Fatalf("Lock after the restart: %v", err)
			}
			t.Logf("locked %v after the restart", time.Since(restarted))
			if d := time.Since(restarted); d > ttl+time.Second {
				t.Errorf("locked %v after the restart, want within the TTL %v", d, ttl)
			}
			if l2.Token() <= l.Token() {
				t.Errorf("token %d after the restart, %d before: tokens must survive it", l2.Token(), l.Token())
			}
			if err := l2.Unlock(ctx); err != nil {
				t.Errorf("Unlock: %v", err)
			}
		})
	}
}

func mustRLockOther(t *testing.T, c *dlock.Client, name string) *dlock.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock(%q): %v", name, err)
	}
	return l
}

// The server's lock table is shared by advisory and ordinary locks; when
// it is full the driver says so, naming the setting, and does not retry.
func TestLockTableFull(t *testing.T) {
	srv := testserver.StartPostgres(t, "max_connections = 20", "max_locks_per_transaction = 10")
	c, _ := newClient(t, testserver.PostgresURL(srv), dlock.WithTTL(30*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var leases []*dlock.Lease
	defer func() {
		for _, l := range leases {
			l.Unlock(context.Background())
		}
	}()
	for i := range 20000 {
		l, err := c.Mutex(fmt.Sprintf("dlocktest/full/%d", i)).TryLock(ctx)
		if err == nil {
			leases = append(leases, l)
			continue
		}
		if !strings.Contains(err.Error(), "max_locks_per_transaction") {
			t.Fatalf("lock %d: %v, want an error naming max_locks_per_transaction", i, err)
		}
		if errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("lock %d: %v is marked ErrUnavailable: a blocking Lock would retry it silently", i, err)
		}
		t.Logf("lock table full after %d locks: %v", i, err)
		return
	}
	t.Fatal("20000 locks and no full lock table")
}

// A reset of both ends of the holder's connection (a middlebox resetting a
// flow both ways) makes the server free the lock at the moment the holder
// learns of it. The next holder must not be granted before the holder's
// lease is over: it waits out the vanished holder's lease (noted in the
// key's row), which the holder's deadline never outlives.
func TestResetBothEnds(t *testing.T) {
	url := testserver.Postgres(t)
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
	for round := range 3 {
		la := mustLock(t, a, name)
		got := make(chan *dlock.Lease, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			l, err := b.Mutex(name).Lock(ctx)
			if err != nil {
				t.Errorf("Lock: %v", err)
			}
			got <- l
		}()
		waitWaiters(t, b, name, 1)
		p, _ := h.proxy(da)
		reset := time.Now()
		p.Reset(func(*faultproxy.Conn) bool { return true })
		lb := <-got
		if lb == nil {
			return
		}
		select {
		case <-la.Done():
		default:
			t.Errorf("round %d: granted %v after the reset while the reset holder's lease was not Done", round, time.Since(reset))
		}
		if lb.Token() <= la.Token() {
			t.Errorf("round %d: token %d after %d", round, lb.Token(), la.Token())
		}
		t.Logf("round %d: granted %v after the reset (TTL %v)", round, time.Since(reset), ttl)
		if d := time.Since(reset); d > ttl+time.Second {
			t.Errorf("round %d: granted %v after the reset, want within the TTL %v", round, d, ttl)
		}
		if err := lb.Unlock(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
