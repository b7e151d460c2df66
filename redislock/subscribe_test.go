package redislock

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// A blocking Lock must not fail, nor hang, because of its own notification
// plumbing: the pub/sub connection that carries release messages.

// awaitLock waits for a Lock started with lockAsync, failing the test after
// within.
func awaitLock(t *testing.T, ch <-chan lockResult, within time.Duration, what string) lockResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(within):
		t.Fatalf("%s: not granted within %v", what, within)
	}
	return lockResult{}
}

// TestSubscribeRefused: the waiter's pub/sub connection cannot be made
// (the server refuses new connections; the command connection is already
// open). The waiter still gets the lock after the holder's release, from
// its timer on the holder's expiry.
func TestSubscribeRefused(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	rdbW, p := proxied(t, addr)
	if err := rdbW.Ping(ctx).Err(); err != nil { // the command connection
		t.Fatal(err)
	}
	w := newClient(t, rdbW)
	h := newClient(t, adminClient(t, addr), dlock.WithTTL(time.Second))
	name := uniqueName(t)

	lh, err := h.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Refuse(true)
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	got := lockAsync(wctx, w.Mutex(name))
	select {
	case r := <-got:
		t.Fatalf("waiter's Lock returned while the lock was held: %v", r.err)
	case <-time.After(1500 * time.Millisecond): // the holder renews meanwhile
	}
	released := time.Now()
	if err := lh.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := awaitLock(t, got, 5*time.Second, "waiter without a subscription")
	t.Logf("granted %v after the release, without a subscription", r.at.Sub(released))
	if r.l.Token() <= lh.Token() {
		t.Errorf("token %d after %d", r.l.Token(), lh.Token())
	}
	p.Refuse(false)
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSubscribeUnconfirmed: the server never confirms the waiter's
// SUBSCRIBE (its replies on the pub/sub connection are stalled). The
// waiter must not wait for the confirmation forever: it gets the lock
// after the holder's release, at the holder's expiry.
func TestSubscribeUnconfirmed(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	rdbW, p := proxied(t, addr)
	w := newClient(t, rdbW)
	admin := adminClient(t, addr)
	h := newClient(t, admin, dlock.WithTTL(time.Second))
	name := uniqueName(t)

	// A first wait opens the driver's pub/sub connection.
	warmUp(t, w, h, admin, name+"/warm-up")
	undo := p.Add(pubsubConn, faultproxy.Fault{Stall: true, Dir: faultproxy.Down})
	defer undo()

	lh, err := h.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	got := lockAsync(wctx, w.Mutex(name))
	select {
	case r := <-got:
		t.Fatalf("waiter's Lock returned while the lock was held: %v", r.err)
	case <-time.After(1500 * time.Millisecond):
	}
	released := time.Now()
	if err := lh.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := awaitLock(t, got, 5*time.Second, "waiter whose subscription is not confirmed")
	t.Logf("granted %v after the release", r.at.Sub(released))
	undo()
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// warmUp has w wait once for name behind h, so that w's driver has its
// pub/sub connection open.
func warmUp(t *testing.T, w, h *dlock.Client, admin *redis.Client, name string) {
	t.Helper()
	ctx := context.Background()
	lh, err := h.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := lockAsync(ctx, w.Mutex(name))
	queue := (&Driver{prefix: DefaultPrefix}).keysOf(name).queue
	waitFor(t, 5*time.Second, "the warm-up waiter to queue", func() bool { return admin.ZCard(ctx, queue).Val() == 1 })
	lh.Unlock(ctx)
	r := awaitLock(t, got, 5*time.Second, "warm-up waiter")
	r.l.Unlock(ctx)
}

// TestResubscribeAfterCancelledWait: a waiter gives up before its
// SUBSCRIBE is confirmed, a second waiter subscribes to the same channel,
// and the pub/sub connection is then cut: go-redis re-subscribes once, so
// one confirmation comes for the two SUBSCRIBEs that were pending. The
// second waiter must still be woken by the release.
func TestResubscribeAfterCancelledWait(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	rdbW, p := proxied(t, addr)
	w := newClient(t, rdbW)
	admin := adminClient(t, addr)
	h := newClient(t, admin, dlock.WithTTL(5*time.Second))
	name := uniqueName(t)

	warmUp(t, w, h, admin, name+"/warm-up")
	undo := p.Add(pubsubConn, faultproxy.Fault{Stall: true, Dir: faultproxy.Down})
	defer undo()
	lh, err := h.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The first waiter gives up while its SUBSCRIBE is unconfirmed.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if l, err := w.Mutex(name).Lock(short); err == nil {
		l.Unlock(ctx)
		t.Fatal("first waiter got the lock")
	}
	cancel()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	got := lockAsync(wctx, w.Mutex(name))
	time.Sleep(300 * time.Millisecond) // let the second SUBSCRIBE go out; no event tells
	if n := p.Reset(pubsubConn); n == 0 {
		t.Fatal("no pub/sub connection to cut")
	}
	time.Sleep(300 * time.Millisecond) // let go-redis reconnect and re-subscribe under the stall
	undo()
	// The holder's key would expire 5 s after its last renewal: a waiter
	// woken only by its timer would take seconds.
	time.Sleep(500 * time.Millisecond)
	released := time.Now()
	if err := lh.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := awaitLock(t, got, 10*time.Second, "second waiter")
	took := r.at.Sub(released)
	t.Logf("granted %v after the release", took)
	if took > time.Second {
		t.Errorf("granted %v after the release: the release did not wake the waiter", took)
	}
	r.l.Unlock(ctx)
}

// TestShortTTLWaiterLongTTLHolder: a waiter with a short TTL behind a
// holder with a long one. Its queue entry must outlive the wait, so that
// the holder's release hands the lock over at once rather than the waiter
// sleeping until the holder's key would have expired.
func TestShortTTLWaiterLongTTLHolder(t *testing.T) {
	addrs := testserver.Redis(t)
	for _, tc := range []struct {
		name  string
		addrs []string
	}{{"single", addrs[:1]}, {"redlock", addrs}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h := redlockOrSingle(t, tc.addrs, dlock.WithTTL(10*time.Second))
			w := redlockOrSingle(t, tc.addrs, dlock.WithTTL(500*time.Millisecond))
			name := uniqueName(t)
			lh, err := h.Mutex(name).Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := lockAsync(ctx, w.Mutex(name))
			select {
			case r := <-got:
				t.Fatalf("waiter's Lock returned while the lock was held: %v", r.err)
			case <-time.After(3 * time.Second): // longer than 2 x 500 ms + 1 s
			}
			released := time.Now()
			if err := lh.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			r := awaitLock(t, got, 15*time.Second, "short-TTL waiter")
			took := r.at.Sub(released)
			t.Logf("granted %v after the release", took)
			if took > time.Second {
				t.Errorf("granted %v after the release, want at once (within 1 s)", took)
			}
			r.l.Unlock(ctx)
		})
	}
}

// redlockOrSingle returns a client over addrs: a single node for one
// address, Redlock for several.
func redlockOrSingle(t *testing.T, addrs []string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	if len(addrs) > 1 {
		return redlockClient(t, addrs, opts...)
	}
	return newClient(t, adminClient(t, addrs[0]), opts...)
}

// TestSecondWaiterOfClientQueues: two waiters of one client on one lock
// share its subscription; the second, joining a subscription confirmed
// already, still looks again at once and so queues. Before, it slept
// unqueued until the holder's expiry: the release went to the first
// waiter, whose release then found nobody queued and woke nobody.
func TestSecondWaiterOfClientQueues(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	admin := adminClient(t, addr)
	name := uniqueName(t)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	h := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))
	w := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))

	lh, err := h.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := lockAsync(ctx, w.Mutex(name))
	waitFor(t, 5*time.Second, "the first waiter to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 1 })
	second := lockAsync(ctx, w.Mutex(name))
	waitFor(t, 5*time.Second, "the second waiter to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 2 })
	if err := lh.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := awaitLock(t, first, 2*time.Second, "first waiter")
	if err := r.l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r = awaitLock(t, second, 2*time.Second, "second waiter")
	r.l.Unlock(ctx)
}
