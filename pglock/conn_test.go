package pglock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testlog"
	"github.com/dlockio/dlock/internal/testserver"
)

const (
	connLost     = testlog.ConnLost
	connRestored = testlog.ConnRestored
)

// TestConnectionLogged: with a logger, the client logs the loss of the
// driver's connection to the server and its return (driver.ConnNotifier),
// for a terminated backend, a reset connection and a server that refuses
// connections; no line logged holds the password of the URL.
func TestConnectionLogged(t *testing.T) {
	base, err := url.Parse(testserver.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, fault := range []string{"terminate", "reset", "refuse"} {
		t.Run(fault, func(t *testing.T) {
			p, err := faultproxy.Start(base.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			secret := fmt.Sprintf("pw-%d-secret", time.Now().UnixNano())
			u := *base
			u.Host, u.User = p.Addr(), url.UserPassword(base.User.Username(), secret)
			q := u.Query()
			q.Set(TableParam, testTable)
			u.RawQuery = q.Encode()
			h := testlog.New()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := dlock.Open(ctx, u.String(), dlock.WithTTL(10*time.Second), dlock.WithLogger(h.Logger()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			name := lockName(t)
			l, err := c.Mutex(name).Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch fault {
			case "terminate":
				terminateHolders(t, adminPool(t, base.String()), []int64{Key(name)})
			case "reset":
				p.Reset(faultproxy.Any)
			case "refuse":
				if err := l.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
				p.Refuse(true)
				// A lock of another TTL needs a session of its own: one
				// that could not be opened is the loss.
				if l, err := c.Mutex(name+"/2", dlock.WithTTL(5*time.Second)).TryLock(ctx); err == nil {
					l.Unlock(ctx)
					t.Fatal("TryLock with the server refusing connections succeeded")
				}
			}
			lost := h.Await(t, connLost, 1)
			if fault != "refuse" {
				select {
				case <-l.Done():
				case <-time.After(5 * time.Second):
					t.Error("the lease on the lost session is not done")
				}
			}
			p.Refuse(false)
			// Another name: this one's successor waits out the lease of the
			// holder that vanished.
			l2, err := c.Mutex(name+"/again", dlock.WithTTL(5*time.Second)).Lock(ctx)
			if err != nil {
				t.Fatalf("Lock once the server is back: %v", err)
			}
			back := h.Await(t, connRestored, 1)
			t.Logf("%s\n%s", lost, back)
			want := map[string]string{"terminate": "terminating connection due to administrator command",
				"reset": "(1 locks lost with it)", "refuse": "connecting to " + p.Addr() + " failed"}[fault]
			if !strings.Contains(lost, want) {
				t.Errorf("logged %q: want %q in it", lost, want)
			}
			for _, line := range []string{lost, back} {
				if !strings.Contains(line, "dlock.driver=pglock") {
					t.Errorf("logged %q: want dlock.driver=pglock", line)
				}
			}
			if !strings.Contains(back, "connected to "+p.Addr()+" (server process ") {
				t.Errorf("logged %q: want the server's address and process", back)
			}
			if err := l2.Unlock(ctx); err != nil {
				t.Error(err)
			}
			c.Close()
			for _, line := range h.Lines() {
				if strings.Contains(line, secret) {
					t.Errorf("logged the password: %q", line)
				}
			}
		})
	}
}

// A spare session that the server ends for idleness (idle_session_timeout,
// the TTL) is not the loss of the connection: nothing is logged.
func TestIdleSessionEndNotLogged(t *testing.T) {
	url := testserver.Postgres(t)
	h := testlog.New()
	ttl := time.Second
	c, d := newClient(t, url, dlock.WithTTL(ttl), dlock.WithLogger(h.Logger()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := lockName(t)
	l, err := c.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	var spare *session
	for s := range d.sessions[ttl] {
		spare = s
	}
	d.mu.Unlock()
	if spare == nil {
		t.Fatal("no spare session kept after the unlock")
	}
	select {
	case <-spare.dead:
	case <-ctx.Done():
		t.Fatal("the server did not end the idle spare session")
	}
	spare.mu.Lock()
	cause := spare.deadErr
	spare.mu.Unlock()
	var pe *pgconn.PgError
	if !errors.As(cause, &pe) || pe.Code != "57P05" {
		t.Fatalf("the spare session ended with %v, want idle_session_timeout (57P05)", cause)
	}
	// A new session opened after it: had the end been told, the return
	// would be too.
	l, err = c.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, line := range h.Matching(connLost, connRestored) {
		t.Errorf("logged %q for a session the server ended for idleness", line)
	}
}
