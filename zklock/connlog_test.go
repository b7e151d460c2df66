package zklock

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testlog"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestConnectionLogged: with a logger, the client logs the loss of the
// session's connection and its return (driver.ConnNotifier), with the
// leases held; the lock rides the outage out.
func TestConnectionLogged(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	h := testlog.New()
	c, _, k := testClient(t, servers, 8*time.Second, dlock.WithLogger(h.Logger()))
	ctx := context.Background()
	l, err := c.Mutex(uniqueName(t)).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	k.partition(true)
	lost := h.Await(t, testlog.ConnLost, 1)
	k.partition(false)
	back := h.Await(t, testlog.ConnRestored, 1)
	t.Logf("%s\n%s", lost, back)
	for _, line := range []string{lost, back} {
		if !strings.Contains(line, "dlock.held=1") || !strings.Contains(line, "dlock.driver=zklock") {
			t.Errorf("logged %q: want dlock.held=1 and dlock.driver=zklock", line)
		}
	}
	if !strings.Contains(back, "session 0x") {
		t.Errorf("logged %q: want the session", back)
	}
	if err := l.Err(); err != nil {
		t.Errorf("the lease did not ride out a short outage: %v", err)
	}
}
