package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// statementsServer starts a dedicated server that counts statements
// (pg_stat_statements), and returns its URL and a pool on it.
func statementsServer(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	srv := testserver.StartPostgres(t, "shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track = 'all'")
	url := testserver.PostgresURL(srv)
	admin := adminPool(t, url)
	if _, err := admin.Exec(context.Background(), "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		t.Fatalf("pg_stat_statements: %v", err)
	}
	return url, admin
}

// statementsRun is how many statements the server has run, since the
// last pg_stat_statements_reset, whose text contains like (a LIKE
// pattern).
func statementsRun(t *testing.T, admin *pgxpool.Pool, like string) int64 {
	t.Helper()
	var n int64
	if err := admin.QueryRow(context.Background(), `SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
		WHERE query LIKE $1`, like).Scan(&n); err != nil {
		t.Fatalf("pg_stat_statements: %v", err)
	}
	return n
}

// Concurrent releases of one client's many locks go out in a few
// statements per session, not one each (release.go), counted by the
// server; every lock is then free and its lease ended in its row.
func TestReleasesBatched(t *testing.T) {
	url, admin := statementsServer(t)
	c, _ := newClient(t, url, dlock.WithTTL(30*time.Second))
	prefix := lockName(t)
	const n, callers = 200, 16
	leases := make([]*dlock.Lease, n)
	keys := make([]int64, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := g; i < n; i += callers {
				// Readers too: their leases end in the same statements.
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
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var sessions int
	if err := admin.QueryRow(ctx, `SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = ANY($1)`, keys).Scan(&sessions); err != nil {
		t.Fatalf("holders: %v", err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatal(err)
	}
	// All Unlocks start together: batching, not the goroutines' start-up
	// on a loaded machine, is what the count below measures.
	start := make(chan struct{})
	for i, l := range leases {
		wg.Go(func() {
			<-start
			if err := l.Unlock(ctx); err != nil {
				t.Errorf("Unlock %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	count := statementsRun(t, admin, "%pg_advisory_unlock%")
	t.Logf("%d releases of locks on %d sessions: %d statements on the server", n, sessions, count)
	// One statement per release before batching; the first release on a
	// session goes out alone, then those that came meanwhile together,
	// a few times over as the 200 goroutines straggle in.
	if want := int64(n / 10); count > want {
		t.Errorf("%d releases on %d sessions took %d statements, want at most %d", n, sessions, count, want)
	}
	if count == 0 {
		t.Error("no release statement counted: the count cannot tell")
	}
	var held, leased int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid IN (1, 2) AND (classid::bigint << 32 | objid::bigint) = ANY($1)`, keys).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if err := admin.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s WHERE key = ANY($1)
		AND (held_until IS NOT NULL OR readers IS NOT NULL AND readers <> '{}')`, testTable), keys).Scan(&leased); err != nil {
		t.Fatal(err)
	}
	if held != 0 || leased != 0 {
		t.Errorf("after releasing every lock: %d still held on the server, %d leases left in their rows", held, leased)
	}
}

// A batch answers each release on its own: a lock its session no longer
// held is ErrLockLost, the second of two releases of one lock is told the
// first released it, the others are released; and a batch whose statement
// fails answers every entry with an error, never success, and leaves the
// locks held (a repeat releases them).
func TestBatchedReleaseAnswersEach(t *testing.T) {
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
	}
	defer func() {
		for _, l := range locks {
			l.Release(ctx)
		}
	}()
	sessions := map[*session]bool{}
	for _, l := range locks {
		sessions[l.s] = true
	}

	// A statement that cannot run: the token table is locked by another
	// transaction. The releases give up at their deadline.
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", pgx.Identifier{testTable}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	var failed sync.WaitGroup
	for i := range 5 {
		failed.Go(func() {
			rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer rcancel()
			if err := locks[i].Release(rctx); err == nil || errors.Is(err, driver.ErrLockLost) {
				t.Errorf("release %d through a blocked statement: %v, want an error saying nothing of the lock", i, err)
			}
		})
	}
	failed.Wait()
	// The blocked statement ends (cancelled by the server) before the
	// table is let go, so that it cannot release anything after all: a
	// session's next use waits for it.
	for _, l := range locks[:5] {
		if err := l.s.use(ctx, func(*pgx.Conn) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// Behind the driver's back: locks 10 (exclusive) and 11 (a reader)
	// are unlocked on their own sessions.
	for _, l := range locks[10:12] {
		q := "SELECT pg_advisory_unlock($1)"
		if l.mode == driver.Shared {
			q = "SELECT pg_advisory_unlock_shared($1)"
		}
		if err := l.s.use(ctx, func(c *pgx.Conn) error { _, err := c.Exec(ctx, q, l.key); return err }); err != nil {
			t.Fatal(err)
		}
	}
	before := d.releaseStatements.Load()
	type result struct {
		i   int
		err error
	}
	results := make(chan result, n+1)
	for i, l := range locks {
		go func() { results <- result{i, l.Release(ctx)} }()
	}
	go func() { results <- result{20, locks[20].Release(ctx)} }() // lock 20 twice
	var twice []error
	for range n + 1 {
		r := <-results
		switch {
		case r.i == 20:
			twice = append(twice, r.err)
		case r.i == 10 || r.i == 11:
			if !errors.Is(r.err, driver.ErrLockLost) {
				t.Errorf("release of lock %d, unlocked behind the driver's back: %v, want ErrLockLost", r.i, r.err)
			}
		case r.err != nil:
			t.Errorf("release of lock %d: %v", r.i, r.err)
		}
	}
	if (twice[0] == nil) == (twice[1] == nil) || !errors.Is(errors.Join(twice...), driver.ErrLockLost) {
		t.Errorf("two releases of lock 20: %v and %v, want one released and one ErrLockLost", twice[0], twice[1])
	}
	statements := d.releaseStatements.Load() - before
	t.Logf("%d releases on %d sessions in %d statements", n+1, len(sessions), statements)
	// The first release on a session goes out alone, those that come
	// meanwhile together; a third for the stragglers of 41 goroutines.
	if statements > int64(3*len(sessions)) {
		t.Errorf("%d releases on %d sessions went out in %d statements, want at most 3 per session", n+1, len(sessions), statements)
	}
	var held int
	keys := make([]int64, n)
	for i, l := range locks {
		keys[i] = l.key
	}
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid IN (1, 2) AND (classid::bigint << 32 | objid::bigint) = ANY($1)`, keys).Scan(&held); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Errorf("%d locks still held after their releases", held)
	}
}
