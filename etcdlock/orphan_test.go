package etcdlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// These tests run at the driver level: the portable layer retries a failed
// Release on its own, and the driver must be right without it.

// longTTL is long enough that a key left on a lease that stops being renewed
// would still block the tests below: they pass only if the driver itself
// deletes it.
const longTTL = 30 * time.Second

func mustDriver(tb testing.TB, cli *clientv3.Client) driver.Driver {
	tb.Helper()
	d, err := NewDriver(cli, &Options{Prefix: "dlocktest"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

func acquire(tb testing.TB, ctx context.Context, d driver.Driver, name string) driver.Lock {
	tb.Helper()
	l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: longTTL, Wait: true})
	if err != nil {
		tb.Fatalf("Acquire(%q): %v", name, err)
	}
	return l
}

// keepRenewing renews l every second, as the portable layer keeps a busy
// client's other locks (and so the driver's shared lease) alive, until the
// test ends.
func keepRenewing(t *testing.T, l driver.Lock) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				l.Renew(rctx) // errors while a fault is on are expected
				rcancel()
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// queueKeys returns the keys queued for name, oldest first.
func queueKeys(t *testing.T, ctx context.Context, admin *clientv3.Client, name string) []string {
	t.Helper()
	pfx := (&Driver{root: "dlocktest/"}).namePrefix(name)
	resp, err := admin.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// waitGone waits until key is deleted, for at most within.
func waitGone(t *testing.T, ctx context.Context, admin *clientv3.Client, key string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	wch := admin.Watch(wctx, key, clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	<-wch // created: a delete from now on is an event
	for {
		resp, err := admin.Get(wctx, key, clientv3.WithCountOnly())
		if err == nil && resp.Count == 0 {
			return time.Since(start)
		}
		select {
		case <-wch:
		case <-wctx.Done():
			t.Fatalf("key %s still there %v later", key, within)
		}
	}
}

// TestFailedReleaseFreesName: a Release that fails (cancelled context, or
// the engine cut off and then back) must not leave the key on the driver's
// lease, which the driver's other locks keep alive: the name is free again
// at once when the engine answers, not when the client closes.
func TestFailedReleaseFreesName(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	for _, tc := range []struct {
		name    string
		release func(t *testing.T, c *conn, l driver.Lock) error
	}{
		{"CancelledContext", func(t *testing.T, c *conn, l driver.Lock) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return l.Release(ctx)
		}},
		{"EngineCutOff", func(t *testing.T, c *conn, l driver.Lock) error {
			undo, err := c.fault("", drivertest.Fault{Down: true})
			if err != nil {
				t.Fatal(err)
			}
			defer undo()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return l.Release(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			name := benchName(t)
			ca := newConn(t, eps)
			da := mustDriver(t, ca.cli)
			db := mustDriver(t, newClient(t, eps))
			keepRenewing(t, acquire(t, ctx, da, name+"/other"))
			la := acquire(t, ctx, da, name)
			key := queueKeys(t, ctx, admin, name)[0]

			if err := tc.release(t, ca, la); err == nil {
				t.Fatal("Release succeeded; the test needs it to fail")
			} else {
				t.Logf("failed Release: %v", err)
			}
			// The engine answers again: the key must go at once, not in TTL
			// (never, here: the lease is kept alive for the other lock).
			took := waitGone(t, ctx, admin, key, longTTL+5*time.Second)
			t.Logf("key deleted %v after the failed Release", took)
			if took > 3*time.Second {
				t.Errorf("key deleted only %v after the failed Release, want at once", took)
			}
			lb := acquire(t, ctx, db, name)
			// Release may be called again after a failure (the portable layer
			// retries it): it must not touch the next holder's key.
			if err := la.Release(ctx); err != nil && !errors.Is(err, driver.ErrLockLost) {
				t.Errorf("Release again after the key was deleted: %v, want nil or ErrLockLost", err)
			}
			if keys := queueKeys(t, ctx, admin, name); len(keys) != 1 {
				t.Errorf("after the old holder's second Release: queue %q, want the new holder's key alone", keys)
			}
			if err := lb.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCancelledWaitCleanupFails: a waiter whose wait ends while it is cut
// off from etcd cannot delete its queue key then; that key must not stay
// behind (on a lease its other locks keep alive) and block every later
// waiter: it goes as soon as the engine answers again.
func TestCancelledWaitCleanupFails(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := benchName(t)
	da := mustDriver(t, newClient(t, eps))
	cb := newConn(t, eps)
	db := mustDriver(t, cb.cli)
	dc := mustDriver(t, newClient(t, eps))

	la := acquire(t, ctx, da, name)
	keepRenewing(t, acquire(t, ctx, db, name+"/other"))
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	waited := make(chan error, 1)
	go func() {
		l, _, err := db.Acquire(wctx, driver.Request{Name: name, TTL: longTTL, Wait: true})
		if err == nil {
			l.Release(ctx)
		}
		waited <- err
	}()
	var keys []string
	for len(keys) < 2 {
		keys = queueKeys(t, ctx, admin, name)
		time.Sleep(10 * time.Millisecond) // no event says the waiter has queued
	}
	waiterKey := keys[1]

	undo, err := cb.fault("", drivertest.Fault{Down: true})
	if err != nil {
		t.Fatal(err)
	}
	wcancel()
	select {
	case err := <-waited:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v, want context.Canceled", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cancelled wait did not return within 15 s")
	}
	if keys := queueKeys(t, ctx, admin, name); len(keys) != 2 {
		t.Fatalf("queue %q while the waiter is cut off; the test needs its cleanup to have failed", keys)
	}
	undo()
	took := waitGone(t, ctx, admin, waiterKey, longTTL+5*time.Second)
	t.Logf("waiter's key deleted %v after the heal", took)
	if took > 3*time.Second {
		t.Errorf("waiter's key deleted only %v after the heal, want at once", took)
	}

	// Nothing is left ahead of a new waiter but the holder.
	got := make(chan error, 1)
	go func() {
		l, _, err := dc.Acquire(ctx, driver.Request{Name: name, TTL: longTTL, Wait: true})
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	for len(queueKeys(t, ctx, admin, name)) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("next waiter granted %v after the release", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("next waiter not granted within 5 s of the release")
	}
}
