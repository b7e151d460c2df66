package pglock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// Behind PgBouncer in transaction mode a connection's statements run on
// any of the pooler's server connections, which breaks session-level
// locks: the driver sees its session's server process change and says so.
// In session mode it locks as usual.
func TestPgBouncer(t *testing.T) {
	raw := testserver.Postgres(t)
	up, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			b := testserver.StartPgBouncer(t, up.Host, mode)
			// PgBouncer 1.18 keeps no prepared statements across
			// transactions: pgx must not cache them.
			burl := fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable&default_query_exec_mode=exec", up.User.Username(), b.Addr())
			c, _ := newClient(t, burl, dlock.WithTTL(20*time.Second))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			name := lockName(t)
			first, err := c.Mutex(name + "/1").TryLock(ctx)
			if err != nil {
				t.Fatalf("first TryLock: %v", err)
			}
			defer first.Unlock(ctx)
			// Another client takes the pooler's idle server connection, the
			// one the driver's session has used so far, into a transaction.
			other, err := pgx.Connect(ctx, burl)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close(ctx)
			tx, err := other.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			second, err := c.Mutex(name + "/2").TryLock(ctx)
			if mode == "session" {
				if err != nil {
					t.Fatalf("TryLock through PgBouncer in session mode: %v", err)
				}
				second.Unlock(ctx)
				return
			}
			if err == nil {
				second.Unlock(ctx)
				t.Fatal("TryLock through PgBouncer in transaction mode succeeded")
			}
			if !strings.Contains(err.Error(), "PgBouncer") || errors.Is(err, driver.ErrUnavailable) {
				t.Errorf("TryLock through PgBouncer in transaction mode = %v, want a permanent error naming PgBouncer", err)
			}
			t.Logf("refused: %v", err)
			select {
			case <-first.Done():
			case <-time.After(5 * time.Second):
				t.Error("the first lock's lease still open after its session proved not to be one")
			}
		})
	}
}
