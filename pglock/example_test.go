package pglock_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/pglock"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url, name := testServer() // e.g. "postgres://app@db.internal/app", "reports/nightly"

	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close() // the dlock clients use pool but leave it open

	c, err := pglock.New(pool, nil, dlock.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	other, err := pglock.New(pool, nil) // another process, in real life
	if err != nil {
		fmt.Println(err)
		return
	}
	defer other.Close()

	lease, err := c.Mutex(name).Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("holding the lock")
	_, err = other.Mutex(name).TryLock(ctx)
	fmt.Println("taken, for the other client:", errors.Is(err, dlock.ErrNotAcquired))

	// The token is the name's counter row, incremented with each grant:
	// pass it to the resource the lock protects, which refuses any older one.
	token := lease.Token()
	if err := lease.Unlock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	next, err := other.Mutex(name).TryLock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer next.Unlock(ctx)
	fmt.Println("the next holder's token is greater:", next.Token() > token)
	// Output:
	// holding the lock
	// taken, for the other client: true
	// the next holder's token is greater: true
}

// A lock taken inside the transaction that writes what it protects: the
// lock is held until the transaction ends, and the token is counted in it,
// so a rolled-back transaction leaves neither a write nor a token behind,
// and the fencing check can be part of the write itself.
func ExampleTx() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url, name := testServer()

	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	// A pglock client creates the token table on first use; Tx expects it.
	c, err := pglock.New(pool, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if _, err := c.Status(ctx, name); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS dlocktest_reports (name text PRIMARY KEY, token bigint, body text)`); err != nil {
		fmt.Println(err)
		return
	}

	write := func(body string) (uint64, error) {
		var token uint64
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			if token, err = pglock.Tx(ctx, tx, name); err != nil {
				return err
			}
			// Only a newer holder's write replaces an older one's.
			_, err = tx.Exec(ctx, `INSERT INTO dlocktest_reports VALUES ($1, $2, $3)
				ON CONFLICT (name) DO UPDATE SET token = excluded.token, body = excluded.body
				WHERE dlocktest_reports.token < excluded.token`, name, int64(token), body)
			return err
		})
		return token, err
	}
	t1, err := write("first")
	if err != nil {
		fmt.Println(err)
		return
	}
	t2, err := write("second")
	if err != nil {
		fmt.Println(err)
		return
	}
	var body string
	if err := pool.QueryRow(ctx, `SELECT body FROM dlocktest_reports WHERE name = $1`, name).Scan(&body); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("tokens increase:", t2 > t1, "- last write:", body)
	// Output:
	// tokens increase: true - last write: second
}

// testServer returns the URL of the shared test server
// (internal/testserver; `make test` starts it) and a lock name of the
// calling example's own, since other test runs may share the server.
//
// An Example can neither skip nor fail by itself: if the server does not
// answer, this prints why, in CI or not, so that the example fails with
// the reason in its output.
func testServer() (url, name string) {
	var tb exampleTB
	url = testserver.Postgres(&tb)
	if tb.msg != "" {
		fmt.Println(tb.msg)
	}
	return url, "dlocktest/example-" + rand.Text()
}

// exampleTB is the testing.TB testserver.Postgres wants, for an Example,
// which has none. testserver.Postgres calls only Helper, Fatalf and Skipf;
// the embedded nil TB makes any other call panic.
type exampleTB struct {
	testing.TB
	msg string
}

func (*exampleTB) Helper() {}

func (tb *exampleTB) Fatalf(format string, args ...any) {
	if tb.msg == "" {
		tb.msg = fmt.Sprintf(format, args...)
	}
}

func (tb *exampleTB) Skipf(format string, args ...any) { tb.Fatalf(format, args...) }
