package redislock

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestReleaseReplyLostUncontended: the release of a lock nobody waits for
// (release.lua's fast path) reaches the server, its reply is lost to a
// reset, and go-redis (MaxRetries 3, the default) sends it again by itself.
// The copy must find the note the first one left and answer "released":
// Unlock returns nil, not ErrLockLost. (drivertest's
// ConnectionReset/ReleaseReplyLost covers the hand-over path, with a
// waiter queued.)
func TestReleaseReplyLostUncontended(t *testing.T) {
	addr := testserver.Redis(t)[0]
	rdb, proxy := proxied(t, addr)
	if !resends(rdb) {
		t.Fatal("the proxied client does not resend: the test would not reach the case")
	}
	admin := adminClient(t, addr)
	c := newClient(t, rdb, dlock.WithTTL(30*time.Second))
	name := uniqueName(t)
	key := (&Driver{prefix: DefaultPrefix}).keysOf(name).lock
	// A first cycle has the server load the scripts: a release answered
	// NOSCRIPT would need a second round trip, whose reply the stall holds.
	warm, err := c.Mutex(name + "/warm").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := warm.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	l, err := c.Mutex(name).Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	undo := proxy.Add(faultproxy.Any, faultproxy.Fault{Stall: true, Dir: faultproxy.Down})
	defer undo()
	unlocked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		unlocked <- l.Unlock(ctx)
	}()
	// The key's deletion says that the release reached the server.
	waitFor(t, 10*time.Second, "the lock key deleted by the stalled release", func() bool {
		n, err := admin.Exists(context.Background(), key).Result()
		return err == nil && n == 0
	})
	select {
	case err := <-unlocked:
		t.Fatalf("Unlock returned %v while its reply was stalled", err)
	default:
	}
	proxy.Reset(faultproxy.Any)
	undo()
	select {
	case err := <-unlocked:
		if err != nil {
			t.Errorf("Unlock whose release went through but whose reply was lost to a reset = %v, want nil", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("Unlock still running 25 s after the reset")
	}
	l2, err := c.Mutex(name).TryLock(t.Context())
	if err != nil {
		t.Fatalf("TryLock after the release: %v", err)
	}
	if l2.Token() <= l.Token() {
		t.Errorf("token %d after %d", l2.Token(), l.Token())
	}
	if err := l2.Unlock(t.Context()); err != nil {
		t.Errorf("Unlock: %v", err)
	}
}
