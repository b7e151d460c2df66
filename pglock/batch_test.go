package pglock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// renewalsLogged counts the renewal statements in a server's log
// (log_statement = 'all') from offset on: every statement that renews
// writes "held_until = greatest(" or a reader's "greatest((readers", once
// (grants write wait_until from them, releases end them, confirmations
// set them; a statement's parameters are logged apart).
func renewalsLogged(t *testing.T, path string, offset int64) (count int, end int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	return bytes.Count(b[offset:], []byte("held_until = greatest(")) + bytes.Count(b[offset:], []byte("greatest((readers")), int64(len(b))
}

// The renewals of one client's many locks go out in a few statements per
// session per renewal interval, not one per lock (driver.RenewCoalescer,
// driver.AsyncRenewer), counted by the server (its statement log).
func TestRenewalsBatched(t *testing.T) {
	srv := testserver.StartPostgres(t, "log_statement = 'all'")
	url := testserver.PostgresURL(srv)
	ttl := 3 * time.Second // a renewal a second
	c, d := newClient(t, url, dlock.WithTTL(ttl))
	prefix := lockName(t)
	const n, callers = 300, 16
	leases := make([]*dlock.Lease, n)
	keys := make([]int64, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += callers {
				// Readers too: their leases are renewed in the same
				// statements.
				var l *dlock.Lease
				var err error
				if i%3 == 0 {
					l, err = c.RWMutex(fmt.Sprintf("%s/%d", prefix, i)).TryRLock(ctx)
				} else {
					l, err = c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx)
				}
				if err != nil {
					t.Errorf("lock %d: %v", i, err)
					return
				}
				leases[i], keys[i] = l, Key(l.Name())
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, l := range leases {
			if l != nil {
				l.Unlock(ctx)
			}
		}
	}()
	if t.Failed() {
		return
	}
	var sessions int
	if err := d.pool.QueryRow(ctx, `SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = ANY($1)`, keys).Scan(&sessions); err != nil {
		t.Fatalf("holders: %v", err)
	}
	// Past the first renewals, then three intervals.
	<-time.After(ttl / 2)
	_, offset := renewalsLogged(t, srv.LogPath(), 0)
	const intervals = 3
	<-time.After(intervals * ttl / 3)
	count, _ := renewalsLogged(t, srv.LogPath(), offset)
	for i, l := range leases {
		if err := l.Err(); err != nil {
			t.Fatalf("lease %d lost while held: %v", i, err)
		}
	}
	perInterval := float64(count) / intervals
	t.Logf("%d locks on %d sessions: %d renewal statements over %d renewal intervals (%.1f per interval)",
		n, sessions, count, intervals, perInterval)
	// Issue 16: at most N/100 plus a small constant per connection.
	if want := float64(n/100 + 3*sessions); perInterval > want {
		t.Errorf("%.1f renewal statements per interval for %d locks on %d sessions, want at most %.0f", perInterval, n, sessions, want)
	}
	if count == 0 {
		t.Error("no renewal statement logged: the count cannot tell")
	}
}

// A batch checks each entry's owner on its own, as a single renewal does:
// exactly the locks whose lease was taken from the key's row (an
// exclusive holder's, a reader's) are reported lost, the others renewed,
// in one or two statements (the first renewal goes out at once, the rest
// together).
func TestBatchedRenewalChecksEachOwner(t *testing.T) {
	url := testserver.Postgres(t)
	admin := adminPool(t, url)
	d, err := NewDriver(admin, &Options{Table: testTable})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := lockName(t)
	const n = 40
	locks := make([]*lock, n)
	for i := range locks {
		mode := driver.Exclusive
		if i%2 == 1 {
			mode = driver.Shared
		}
		l, _, err := d.Acquire(ctx, driver.Request{Name: fmt.Sprintf("%s/%d", prefix, i), TTL: 30 * time.Second, Mode: mode})
		if err != nil {
			t.Fatalf("Acquire %d: %v", i, err)
		}
		locks[i] = l.(*lock)
		defer l.Release(ctx)
	}
	// Taken one after the other they share a session, or a few when one
	// was busy at a pick (at most sharedSessions).
	sessions := map[*session]bool{}
	for _, l := range locks {
		sessions[l.s] = true
	}
	// Behind the driver's back: the leases of locks 10 (exclusive) and
	// 11 (a reader) end in their rows.
	if _, err := admin.Exec(ctx, fmt.Sprintf(`UPDATE %s SET held_until = NULL WHERE key = $1`, testTable), locks[10].key); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`UPDATE %s SET readers = readers - $2::integer::text WHERE key = $1`, testTable),
		locks[11].key, int64(locks[11].s.pid)); err != nil {
		t.Fatal(err)
	}
	before := d.renewStatements.Load()
	type result struct {
		i   int
		v   driver.Validity
		err error
	}
	results := make(chan result, n)
	start := time.Now()
	for i, l := range locks {
		l.RenewAsync(ctx, func(v driver.Validity, err error) { results <- result{i, v, err} })
	}
	for range n {
		r := <-results
		switch lost := r.i == 10 || r.i == 11; {
		case lost && !errors.Is(r.err, driver.ErrLockLost):
			t.Errorf("renewal of lock %d, whose lease was taken: %v, want ErrLockLost", r.i, r.err)
		case !lost && r.err != nil:
			t.Errorf("renewal of lock %d: %v", r.i, r.err)
		case !lost && (r.v.TTL != 30*time.Second || r.v.Since.Before(start)):
			t.Errorf("renewal of lock %d: validity %+v, want the TTL from no earlier than the call", r.i, r.v)
		}
	}
	statements := d.renewStatements.Load() - before
	t.Logf("%d renewals on %d sessions in %d statements", n, len(sessions), statements)
	if statements > int64(2*len(sessions)) {
		t.Errorf("%d renewals on %d sessions went out in %d statements, want at most 2 per session", n, len(sessions), statements)
	}
}
