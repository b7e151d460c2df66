package pglock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// Locks with the same TTL share one session (one connection, one backend).
func TestLocksShareASession(t *testing.T) {
	url := testserver.Postgres(t)
	c, d := newClient(t, url, dlock.WithTTL(20*time.Second))
	name := lockName(t)
	ctx := context.Background()
	var pids []int
	for i := range 5 {
		l, err := c.Mutex(name + "/" + string(rune('a'+i))).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		defer l.Unlock(ctx)
		var pid int
		key := Key(l.Name())
		if err := d.pool.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
			AND objsubid = 1 AND classid::bigint = $1 AND objid::bigint = $2`, int64(uint64(key)>>32), int64(uint32(key))).Scan(&pid); err != nil {
			t.Fatalf("holder of %q: %v", l.Name(), err)
		}
		pids = append(pids, pid)
	}
	for _, p := range pids[1:] {
		if p != pids[0] {
			t.Fatalf("holders' backends %v, want one", pids)
		}
	}
	// The same name twice must not share a session: the server would grant
	// the second lock to the session that holds the first.
	l, err := c.Mutex(name + "/a").TryLock(ctx)
	if !errors.Is(err, dlock.ErrNotAcquired) {
		if l != nil {
			l.Unlock(ctx)
		}
		t.Fatalf("second TryLock of a held name from the same client = %v, want ErrNotAcquired", err)
	}
}

// Many try-locks at once spread over at most sharedSessions sessions (each
// a connection, a server process and a watcher goroutine), not one per
// concurrent caller.
func TestConcurrentLocksShareFewSessions(t *testing.T) {
	url := testserver.Postgres(t)
	c, d := newClient(t, url, dlock.WithTTL(20*time.Second))
	prefix := lockName(t)
	ctx := context.Background()
	const callers, each = 16, 20
	var wg sync.WaitGroup
	leases := make([]*dlock.Lease, callers*each)
	keys := make([]int64, len(leases))
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * each; i < (g+1)*each; i++ {
				l, err := c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx)
				if err != nil {
					t.Errorf("TryLock %d: %v", i, err)
					return
				}
				leases[i], keys[i] = l, Key(l.Name())
			}
		}()
	}
	wg.Wait()
	for _, l := range leases {
		if l != nil {
			defer l.Unlock(ctx)
		}
	}
	if t.Failed() {
		return
	}
	var pids int
	if err := d.pool.QueryRow(ctx, `SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND objsubid = 1 AND (classid::bigint << 32 | objid::bigint) = ANY($1)`, keys).Scan(&pids); err != nil {
		t.Fatalf("holders: %v", err)
	}
	t.Logf("%d locks taken by %d callers at once are held by %d sessions", len(leases), callers, pids)
	if pids > sharedSessions {
		t.Errorf("%d locks taken by %d callers at once are held by %d sessions, want at most %d", len(leases), callers, pids, sharedSessions)
	}
}

// Once a writer waits, a reader's TryRLock fails (the server queues shared
// requests behind a waiting exclusive one).
func TestTryRLockBehindWaitingWriter(t *testing.T) {
	url := testserver.Postgres(t)
	a, _ := newClient(t, url)
	b, _ := newClient(t, url)
	c, _ := newClient(t, url)
	name := lockName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := make(chan error, 1)
	go func() {
		l, err := b.RWMutex(name).Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		w <- err
	}()
	waitWaiters(t, a, name, 1)
	if l, err := c.RWMutex(name).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		if l != nil {
			l.Unlock(ctx)
		}
		t.Fatalf("TryRLock behind a waiting writer = %v, want ErrNotAcquired", err)
	}
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-w; err != nil {
		t.Fatalf("writer: %v", err)
	}
}

func waitWaiters(t *testing.T, c *dlock.Client, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(context.Background(), name)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if st.Waiters >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiters %d, want %d", st.Waiters, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Tx contends with the Mutex of the same name, holds until the transaction
// ends (commit or rollback), and counts its token in the same sequence.
func TestTx(t *testing.T) {
	url := testserver.Postgres(t)
	c, d := newClient(t, url)
	name := lockName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l := mustLock(t, c, name)

	tx, err := d.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = d.Tx(short, tx, name)
	cancelShort()
	if err == nil {
		t.Fatal("Tx granted while a Mutex holds the name")
	}
	tx.Rollback(ctx)
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	var txToken uint64
	err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		var err error
		if txToken, err = d.Tx(ctx, tx, name); err != nil {
			return err
		}
		if txToken <= l.Token() {
			t.Errorf("Tx token %d after the Mutex's %d", txToken, l.Token())
		}
		if m, err := c.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
			if m != nil {
				m.Unlock(ctx)
			}
			t.Errorf("TryLock while a transaction holds the name = %v, want ErrNotAcquired", err)
		}
		// The transaction's token is not committed yet: Status, reading
		// from outside it, sees the last committed one.
		st, err := c.Status(ctx, name)
		if err != nil || !st.Held || st.Token != l.Token() || st.Holders != 1 || st.Mode != dlock.Exclusive {
			t.Errorf("Status while a transaction holds it: %+v, %v", st, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Tx: %v", err)
	}
	// Rolled back: lock and token both undone.
	tx, err = d.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Tx(ctx, tx, name); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	m := mustLock(t, c, name)
	if m.Token() != txToken+1 {
		t.Errorf("Mutex token %d after a committed Tx's %d and a rolled-back one: want %d", m.Token(), txToken, txToken+1)
	}
	m.Unlock(ctx)

	for _, bad := range []struct {
		tx   pgx.Tx
		name string
	}{{nil, name}, {tx, ""}} {
		if _, err := Tx(ctx, bad.tx, bad.name); !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("Tx(%v, %q) = %v, want ErrInvalidArgument", bad.tx, bad.name, err)
		}
	}
}

func TestStatus(t *testing.T) {
	url := testserver.Postgres(t)
	a, _ := newClient(t, url)
	b, _ := newClient(t, url)
	name := lockName(t)
	ctx := context.Background()
	st, err := a.Status(ctx, name)
	if err != nil || st.Held || st.Waiters != 0 {
		t.Fatalf("Status of a free lock: %+v, %v", st, err)
	}
	r1, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Unlock(ctx)
	r2, err := b.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Unlock(ctx)
	st, err = a.Status(ctx, name)
	if err != nil || !st.Held || st.Holders != 2 || st.Mode != dlock.Shared || st.Token != max(r1.Token(), r2.Token()) {
		t.Fatalf("Status with two readers: %+v, %v (tokens %d, %d)", st, err, r1.Token(), r2.Token())
	}
}

// A user who may not create tables, given the token table, can lock: the
// driver only looks the table up when it exists.
func TestUserWithoutCreate(t *testing.T) {
	raw := testserver.Postgres(t)
	admin := adminPool(t, raw)
	ctx := context.Background()
	owner, _ := newClient(t, raw) // creates the table
	if _, err := owner.Status(ctx, "dlocktest/TestUserWithoutCreate"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DO $$ BEGIN CREATE ROLE dlocktest_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		`REVOKE CREATE ON SCHEMA public FROM PUBLIC`,
		`GRANT SELECT, INSERT, UPDATE ON ` + testTable + ` TO dlocktest_app`,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User("dlocktest_app")
	c, _ := newClient(t, u.String())
	l := mustLock(t, c, lockName(t))
	if l.Token() == 0 {
		t.Error("token 0")
	}
	if err := l.Unlock(ctx); err != nil {
		t.Error(err)
	}
	if _, err := pgxConnectAs(t, u.String()).Exec(ctx, "CREATE TABLE dlocktest_should_fail (x int)"); err == nil {
		t.Error("the test user may create tables: the test proves nothing")
	}
}

func pgxConnectAs(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// A wait longer than the TTL: the server's idle timer of the waiter's
// session starts at the grant, which the client cannot date, so the driver
// renews once before returning, and the lease is good for a whole TTL
// (were the validity dated from the wait's start, the portable layer would
// give the grant back and ask again, behind whoever came meanwhile).
// Sessions do not pile up meanwhile.
func TestLongWait(t *testing.T) {
	url := testserver.Postgres(t)
	ttl := time.Second
	a, _ := newClient(t, url, dlock.WithTTL(ttl))
	b, db := newClient(t, url, dlock.WithTTL(ttl))
	name := lockName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := range 3 {
		la := mustLock(t, a, name)
		ch := make(chan *dlock.Lease, 1)
		go func() {
			l, err := b.Mutex(name).Lock(ctx)
			if err != nil {
				t.Errorf("Lock: %v", err)
			}
			ch <- l
		}()
		waitWaiters(t, a, name, 1)
		time.Sleep(2 * ttl) // a holder that keeps it for longer than the TTL, renewing
		if err := la.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		lb := <-ch
		if lb == nil {
			return
		}
		// A grant given back (its validity over on arrival) and asked again
		// would have taken another token.
		if lb.Token() != la.Token()+1 {
			t.Errorf("round %d: waiter's token %d after the holder's %d: the first grant was given back", round, lb.Token(), la.Token())
		}
		select {
		case <-lb.Done():
			t.Fatalf("round %d: the waiter's lease ended at once: %v", round, context.Cause(lb.Context()))
		case <-time.After(2 * ttl): // renewing on its own
		}
		if err := lb.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
	}
	db.mu.Lock()
	n := len(db.sessions[ttl])
	db.mu.Unlock()
	if n > 2 {
		t.Errorf("%d sessions left after 3 waits, want at most 2 (one spare, one in use at most)", n)
	}
}
