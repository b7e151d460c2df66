package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// Concurrent try-locks of distinct names on one client go out in a few
// statements per session, not one each (grant.go), counted by the server;
// a name held elsewhere is not granted (its caller falls back as for a
// single try) while the others in its batch are; and every name's token
// still increases from one grant to the next.
func TestGrantsBatched(t *testing.T) {
	url, admin := statementsServer(t)
	c, _ := newClient(t, url, dlock.WithTTL(30*time.Second))
	other, _ := newClient(t, url, dlock.WithTTL(30*time.Second))
	prefix := lockName(t)
	const n, taken = 200, 20
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s/%d", prefix, i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The first names are held by another client.
	for _, name := range names[:taken] {
		l, err := other.Mutex(name).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock(ctx)
	}
	// A first lock opens the client's session and prepares its statements.
	warm, err := c.Mutex(prefix + "/warm").TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	warm.Unlock(ctx)

	tokens := make([][2]uint64, n)
	for round := range 2 {
		if _, err := admin.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			t.Fatal(err)
		}
		leases := make([]*dlock.Lease, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				l, err := c.Mutex(names[i]).TryLock(ctx)
				switch {
				case i < taken && !errors.Is(err, dlock.ErrNotAcquired):
					t.Errorf("round %d: TryLock of %d, held by another client: %v, want ErrNotAcquired", round, i, err)
				case i >= taken && err != nil:
					t.Errorf("round %d: TryLock %d: %v", round, i, err)
				}
				leases[i] = l
			})
		}
		wg.Wait()
		count := statementsRun(t, admin, "%pg_try_advisory_lock%")
		t.Logf("round %d: %d try-locks: %d statements on the server", round, n, count)
		// One statement per try before batching; the first on a session
		// goes out alone, then those that came meanwhile together, a few
		// times over as the goroutines straggle in.
		if count > n/10 {
			t.Errorf("round %d: %d try-locks took %d statements, want at most %d", round, n, count, n/10)
		}
		if count == 0 {
			t.Error("no try-lock statement counted: the count cannot tell")
		}
		for i, l := range leases {
			if l == nil {
				continue
			}
			tokens[i][round] = l.Token()
			var row uint64
			if err := admin.QueryRow(ctx, fmt.Sprintf("SELECT token FROM %s WHERE key = $1", testTable), Key(names[i])).Scan(&row); err != nil {
				t.Fatal(err)
			}
			if row != l.Token() {
				t.Errorf("round %d: lock %d has token %d, its row %d", round, i, l.Token(), row)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Errorf("round %d: Unlock %d: %v", round, i, err)
			}
		}
		if t.Failed() {
			return
		}
	}
	for i := taken; i < n; i++ {
		if tokens[i][1] <= tokens[i][0] {
			t.Errorf("name %d: token %d, then %d: want it to increase", i, tokens[i][0], tokens[i][1])
		}
	}
}

// A try-lock whose caller gives up while its batch's statement is in
// flight, and which the statement grants after all, leaves neither the
// lock nor its lease behind: the next holder is served at once, not after
// the TTL.
func TestBatchedGrantCutShort(t *testing.T) {
	url := testserver.Postgres(t)
	h := newHarness(t, url)
	d, err := h.MakeDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	name := lockName(t)
	req := driver.Request{Name: name, TTL: 30 * time.Second}
	// A first cycle opens the session and prepares its statements, so
	// that the faulted try sends its statement at once.
	l, _, err := d.Acquire(context.Background(), driver.Request{Name: name + "/warm", TTL: req.TTL})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, err := h.proxy(d)
	if err != nil {
		t.Fatal(err)
	}
	// The statement runs at once; its answer comes after the context ends
	// (too late for the server to cancel it).
	undo := faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, drivertest.Fault{Delay: 300 * time.Millisecond, Dir: drivertest.ToClient})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, _, err = d.Acquire(ctx, req)
	cancel()
	undo()
	if err == nil {
		t.Fatal("a try within 100 ms through a 300 ms delay succeeded: the test proves nothing")
	}
	d2, err := h.MakeDriver(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Close() })
	start := time.Now()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	req.Wait = true
	l2, _, err := d2.Acquire(wctx, req)
	if err != nil {
		t.Fatalf("the lock after a try cut short (TTL 30 s): %v", err)
	}
	t.Logf("granted to the next holder %v after the try gave up", time.Since(start))
	if err := l2.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}
