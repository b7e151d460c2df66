package zklock

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// connLog is an slog handler that hands each record's message and
// attributes to a channel.
type connLog struct {
	mu  sync.Mutex
	out chan string
}

func (h *connLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *connLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	select {
	case h.out <- b.String():
	default:
	}
	return nil
}
func (h *connLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *connLog) WithGroup(string) slog.Handler      { return h }

// TestConnectionLogged: with a logger, the client logs the loss of the
// session's connection and its return (driver.ConnNotifier), with the
// leases held; the lock rides the outage out.
func TestConnectionLogged(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	h := &connLog{out: make(chan string, 100)}
	c, _, k := testClient(t, servers, 8*time.Second, dlock.WithLogger(slog.New(h)))
	ctx := context.Background()
	l, err := c.Mutex(uniqueName(t)).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	await := func(msg string) string {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case line := <-h.out:
				if strings.HasPrefix(line, msg) {
					return line
				}
			case <-deadline:
				t.Fatalf("no %q logged within 20 s", msg)
			}
		}
	}
	k.partition(true)
	lost := await("dlock: engine connection lost")
	k.partition(false)
	back := await("dlock: engine connection restored")
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
