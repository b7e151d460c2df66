package redislock

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// Tests of messages and replies that arrive late and must not act on state
// that has moved on: a single-node grant message that reaches a waiter's
// client after the waiter took the lock up by itself, or after the lock
// went on to someone else.

// proxied returns a go-redis client that reaches addr through a fault proxy
// of its own; both are closed at cleanup.
func proxied(t *testing.T, addr string) (*redis.Client, *faultproxy.Proxy) {
	t.Helper()
	p, err := faultproxy.Start(addr)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
	t.Cleanup(func() {
		rdb.Close()
		p.Close()
	})
	return rdb, p
}

func newClient(t *testing.T, rdb redis.UniversalClient, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	c, err := New(rdb, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func adminClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond, which watches engine state that sends no event, until
// it holds; it fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockResult struct {
	l   *dlock.Lease
	err error
	at  time.Time
}

func rlockAsync(ctx context.Context, rw *dlock.RWMutex) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		l, err := rw.RLock(ctx)
		ch <- lockResult{l, err, time.Now()}
	}()
	return ch
}

func lockAsync(ctx context.Context, m *dlock.Mutex) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		l, err := m.Lock(ctx)
		ch <- lockResult{l, err, time.Now()}
	}()
	return ch
}

// noOtherHolder fails the test if c can take name while l is held, probing
// until until.
func noOtherHolder(t *testing.T, c *dlock.Client, name string, l *dlock.Lease, until time.Time) {
	t.Helper()
	ctx := context.Background()
	for time.Now().Before(until) {
		select {
		case <-l.Done():
			t.Fatalf("holder's lease ended: %v", l.Err())
		default:
		}
		lx, err := c.Mutex(name).TryLock(ctx)
		if err == nil {
			held := "open"
			select {
			case <-l.Done():
				held = "closed"
			default:
			}
			lx.Unlock(ctx)
			t.Fatalf("a third client was granted the lock (token %d) while the holder (token %d) held it; holder's Done %s",
				lx.Token(), l.Token(), held)
		}
		if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryLock: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // spacing the probes; not a synchronisation
	}
}

// TestLateGrantAfterOwnAttempt: a release hands the lock to the queued
// waiter W and publishes the grant; W's own attempt (at the old holder's
// expiry) takes the lock up before the message reaches W's client, whose
// pub/sub connection lags. The late message must not give W's live lock
// away.
func TestLateGrantAfterOwnAttempt(t *testing.T) { lateGrantAfterOwnAttempt(t, false) }

// TestLateReaderGrantAfterOwnAttempt: the same with W a reader, whose
// grant is a shared hold (scripts/single.lua): the late message must not
// release it.
func TestLateReaderGrantAfterOwnAttempt(t *testing.T) { lateGrantAfterOwnAttempt(t, true) }

func lateGrantAfterOwnAttempt(t *testing.T, shared bool) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	admin := adminClient(t, addr)
	rdbW, p := proxied(t, addr)
	w := newClient(t, rdbW, dlock.WithTTL(5*time.Second))
	x := newClient(t, adminClient(t, addr), dlock.WithTTL(5*time.Second))
	name := uniqueName(t)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)

	// The holder is a bare key, so that the test picks its release time.
	const holderTTL = 800 * time.Millisecond
	if err := admin.Set(ctx, k.lock, "holder", holderTTL).Err(); err != nil {
		t.Fatal(err)
	}
	var got <-chan lockResult
	if shared {
		got = rlockAsync(ctx, w.RWMutex(name))
	} else {
		got = lockAsync(ctx, w.Mutex(name))
	}
	waitFor(t, 5*time.Second, "W to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 1 })

	const lag = 1500 * time.Millisecond
	undo := p.Add(pubsubConn, faultproxy.Fault{Delay: lag, Dir: faultproxy.Down})
	defer undo()
	released := time.Now()
	if n, err := releaseScript.Run(ctx, admin, k.single(), "holder", k.channel, 5000, 0).Int64(); n != 1 || err != nil {
		t.Fatalf("release: %d, %v", n, err)
	}
	grantToken, _ := admin.Get(ctx, k.fence).Uint64()

	var r lockResult
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("W not granted")
	}
	if r.err != nil {
		t.Fatalf("W: %v", r.err)
	}
	defer r.l.Unlock(ctx)
	took := r.at.Sub(released)
	t.Logf("W holds %v after the release (grant message due at %v), token %d (granted %d)", took, lag, r.l.Token(), grantToken)
	if took >= lag {
		t.Fatalf("W took the lock up only when the grant message arrived (%v): the case under test did not happen", took)
	}
	if r.l.Token() != grantToken {
		t.Errorf("W's token %d, the release granted %d", r.l.Token(), grantToken)
	}
	// The grant message reaches W's client at released+lag; W holds
	// throughout, so nobody else may get in until well after that.
	noOtherHolder(t, x, name, r.l, released.Add(lag+1500*time.Millisecond))
	undo()
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatalf("W's Unlock: %v", err)
	}
}

// TestStaleGrantMessage: a grant to W whose message is late, whose key
// expired before W saw it, and after which another client took the lock:
// when the message finally arrives W is waiting again and must not take it
// for a grant.
func TestStaleGrantMessage(t *testing.T) { staleGrantMessage(t, false) }

// TestStaleReaderGrantMessage: the same with W a reader.
func TestStaleReaderGrantMessage(t *testing.T) { staleGrantMessage(t, true) }

func staleGrantMessage(t *testing.T, shared bool) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	admin := adminClient(t, addr)
	rdbW, p := proxied(t, addr)
	w := newClient(t, rdbW, dlock.WithTTL(5*time.Second))
	x := newClient(t, adminClient(t, addr), dlock.WithTTL(5*time.Second))
	name := uniqueName(t)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)

	// The holder's key lives 3 s: W's next try (at its expiry) must come
	// after X's TryLock, with room for a loaded machine.
	if err := admin.Set(ctx, k.lock, "holder", 3*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	var got <-chan lockResult
	if shared {
		got = rlockAsync(ctx, w.RWMutex(name))
	} else {
		got = lockAsync(ctx, w.Mutex(name))
	}
	waitFor(t, 5*time.Second, "W to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 1 })

	const lag = 5 * time.Second // past W's next try
	undo := p.Add(pubsubConn, faultproxy.Fault{Delay: lag, Dir: faultproxy.Down})
	defer undo()
	// The holder's release grants W for 100 ms only (the releaser's TTL).
	released := time.Now()
	if n, err := releaseScript.Run(ctx, admin, k.single(), "holder", k.channel, 100, 0).Int64(); n != 1 || err != nil {
		t.Fatalf("release: %d, %v", n, err)
	}
	waitFor(t, 2*time.Second, "W's grant to expire", func() bool {
		if shared {
			return admin.ZCount(ctx, k.shared, strconv.FormatInt(time.Now().UnixMilli(), 10), "+inf").Val() == 0
		}
		return admin.Exists(ctx, k.lock).Val() == 0
	})
	lx, err := x.Mutex(name).TryLock(ctx)
	if err != nil {
		t.Fatalf("X's TryLock after W's grant expired: %v", err)
	}
	if time.Since(released) >= lag {
		t.Fatalf("X took the lock only %v after the release: the grant message may have arrived", time.Since(released))
	}
	// W tries again at the old holder's expiry (~3 s), finds X's lock and
	// waits; the grant message arrives at released+lag.
	select {
	case r := <-got:
		if r.err == nil {
			defer r.l.Unlock(ctx)
		}
		t.Fatalf("W's Lock returned %v (token %d) %v after the release while X holds the lock (token %d)",
			r.err, tokenOf(r.l), r.at.Sub(released), lx.Token())
	case <-time.After(time.Until(released.Add(lag + time.Second))):
	}
	select {
	case <-lx.Done():
		t.Fatalf("X lost the lock: %v", lx.Err())
	default:
	}
	undo()
	if err := lx.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("W after X's release: %v", r.err)
		}
		if r.l.Token() <= lx.Token() {
			t.Errorf("W's token %d after X's %d", r.l.Token(), lx.Token())
		}
		if err := r.l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("W not granted after X's release")
	}
}

func tokenOf(l *dlock.Lease) uint64 {
	if l == nil {
		return 0
	}
	return l.Token()
}
