package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// terminateHolders ends, as an operator's pg_terminate_backend would, the
// server sessions holding any of keys' advisory locks, and returns how
// many it ended.
func terminateHolders(t *testing.T, admin *pgxpool.Pool, keys []int64) int {
	t.Helper()
	var n int
	err := admin.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM (SELECT DISTINCT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = ANY($1)) h`, keys).Scan(&n)
	if err != nil {
		t.Fatalf("pg_terminate_backend: %v", err)
	}
	if n == 0 {
		t.Fatal("no server session holds the locks")
	}
	return n
}

// A terminated session loses every lease it held, at once (well before
// the first renewal would find it gone), each by its own Done, with no
// goroutine per lock (the conformance ManyLocks counts those).
func TestSessionEndLosesEveryLease(t *testing.T) {
	url := testserver.Postgres(t)
	ttl := 30 * time.Second // no renewal (due at TTL/3) within the test
	c, _ := newClient(t, url, dlock.WithTTL(ttl))
	prefix := lockName(t)
	const n = 500
	leases := make([]*dlock.Lease, n)
	keys := make([]int64, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range leases {
		l, err := c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock %d: %v", i, err)
		}
		leases[i], keys[i] = l, Key(l.Name())
	}
	sessions := terminateHolders(t, adminPool(t, url), keys)
	start := time.Now()
	within := time.NewTimer(5 * time.Second)
	defer within.Stop()
	for i, l := range leases {
		select {
		case <-l.Done():
		case <-within.C:
			t.Fatalf("lease %d of %d: Done not closed %v after its session (one of %d) was terminated", i, n, time.Since(start), sessions)
		}
		if err := context.Cause(l.Context()); !errors.Is(err, dlock.ErrLockLost) {
			t.Errorf("lease %d: cause %v, want ErrLockLost", i, err)
		}
	}
	t.Logf("%d leases on %d sessions lost %v after the termination", n, sessions, time.Since(start).Round(time.Millisecond))
}

// The session's end calls the loss notifier of every lock it holds, once,
// and never that of a lock released before.
func TestSessionEndNotifiesHeldLocksOnly(t *testing.T) {
	url := testserver.Postgres(t)
	pool := adminPool(t, url)
	d, err := NewDriver(pool, &Options{Table: testTable})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := lockName(t)
	const n = 200
	locks := make([]driver.Lock, n)
	keys := make([]int64, n)
	calls := make([]atomic.Int32, n)
	called := make(chan int, 2*n)
	for i := range locks {
		name := fmt.Sprintf("%s/%d", prefix, i)
		l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: 30 * time.Second})
		if err != nil {
			t.Fatalf("Acquire %d: %v", i, err)
		}
		ln, ok := l.(driver.LossNotifier)
		if !ok {
			t.Fatalf("pglock's lock %T does not report loss by a call (driver.LossNotifier)", l)
		}
		ln.NotifyLost(func() { calls[i].Add(1); called <- i })
		locks[i], keys[i] = l, Key(name)
	}
	// Every other lock is released first.
	for i := 0; i < n; i += 2 {
		if err := locks[i].Release(ctx); err != nil {
			t.Fatalf("Release %d: %v", i, err)
		}
	}
	terminateHolders(t, pool, keys)
	within := time.After(5 * time.Second)
	for range n / 2 {
		select {
		case i := <-called:
			if i%2 == 0 {
				t.Errorf("the loss of lock %d, released before, was reported", i)
			}
		case <-within:
			t.Fatal("not every held lock's loss was reported within 5 s of its session's termination")
		}
	}
	// A session's end reports each of its locks in one pass: any repeat
	// or released lock would have been called by now.
	for i := range calls {
		if got, want := calls[i].Load(), int32(i%2); got != want {
			t.Errorf("lock %d (released: %v): notified %d times, want %d", i, i%2 == 0, got, want)
		}
	}
	// A Release after the session's end ends the lease still running in
	// the key's row (30 s TTL: nobody else could have been granted the
	// lock meanwhile), so it is this owner's release and returns nil, as
	// the driver contract asks of a release that changed something; a
	// second one finds nothing of its own: ErrLockLost.
	for i := 1; i < n; i += 2 {
		if err := locks[i].Release(ctx); err != nil {
			t.Errorf("Release %d after its session ended, its lease still running = %v, want nil", i, err)
		}
		if err := locks[i].Release(ctx); !errors.Is(err, driver.ErrLockLost) {
			t.Errorf("Release %d again = %v, want ErrLockLost", i, err)
		}
	}
}
