package etcdlock

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// keyValue returns key's value and lease, and whether it exists.
func keyValue(t *testing.T, ctx context.Context, admin *clientv3.Client, key string) (string, int64, bool) {
	t.Helper()
	resp, err := admin.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Lease, true
}

// TestElectionValueInKey: a candidate's value is its writer key's from the
// put that queues it, Proclaim replaces it, and Holder reports the writer
// at the head only: a reader or a permit at the head is nobody, and so is
// a writer queued behind a reader. A value with Shared or a limit is
// refused.
func TestElectionValueInKey(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a := newLockClient(t, newClient(t, eps))
	b := newLockClient(t, newClient(t, eps))
	d := mustDriver(t, newClient(t, eps))

	la, err := a.Election(name).Campaign(ctx, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	keys := queueKeys(t, ctx, admin, name)
	if v, _, _ := keyValue(t, ctx, admin, keys[0]); len(keys) != 1 || v != "a:1" {
		t.Fatalf("keys %q, the leader's value %q; want one key with \"a:1\"", keys, v)
	}
	bch := make(chan error, 1)
	go func() {
		lb, err := b.Election(name).Campaign(ctx, "b:1")
		if err == nil {
			err = lb.Resign(ctx)
		}
		bch <- err
	}()
	waitQueued(t, ctx, admin, name, 2)
	keys = queueKeys(t, ctx, admin, name)
	if v, _, _ := keyValue(t, ctx, admin, keys[1]); v != "b:1" {
		t.Errorf("waiting candidate's key holds %q, want \"b:1\" from the start", v)
	}
	if err := la.Proclaim(ctx, "a:2"); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := keyValue(t, ctx, admin, keys[0]); v != "a:2" {
		t.Errorf("after Proclaim the leader's key holds %q, want \"a:2\"", v)
	}
	if h, err := d.(driver.Observer).Holder(ctx, name); err != nil || h != (driver.Holder{Token: la.Term(), Value: "a:2"}) {
		t.Errorf("Holder = %+v, %v; want term %d, \"a:2\"", h, err, la.Term())
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, bch, 10*time.Second, "second candidate"); err != nil {
		t.Fatal(err)
	}

	// Readers and permits hold nothing exclusively.
	r, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		lb, err := b.Election(name).Campaign(ctx, "b:2")
		if err == nil {
			err = lb.Resign(ctx)
		}
		bch <- err
	}()
	waitQueued(t, ctx, admin, name, 2)
	if h, err := d.(driver.Observer).Holder(ctx, name); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder with a reader ahead of a candidate = %+v, %v; want nobody", h, err)
	}
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, bch, 10*time.Second, "candidate behind a reader"); err != nil {
		t.Fatal(err)
	}
	p, err := a.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := d.(driver.Observer).Holder(ctx, name); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder with a permit held = %+v, %v; want nobody", h, err)
	}
	if err := p.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	for _, req := range []driver.Request{
		{Name: name, TTL: time.Minute, Mode: driver.Shared, Value: "v"},
		{Name: name, TTL: time.Minute, Limit: 2, Value: "v"},
	} {
		if _, _, err := d.Acquire(ctx, req); !errors.Is(err, driver.ErrInvalidArgument) {
			t.Errorf("Acquire(mode %v, limit %d, with a value) = %v, want ErrInvalidArgument", req.Mode, req.Limit, err)
		}
	}
	if keys := queueKeys(t, ctx, admin, name); len(keys) != 0 {
		t.Errorf("keys left: %q", keys)
	}
}

// TestProclaimOwnerChecked: SetValue writes only the key this lock created
// on its own lease. A key re-put by someone else (same create revision,
// another lease) or deleted and re-created (same name) is not ours: the
// leader learns it lost, and the other value stays.
func TestProclaimOwnerChecked(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		how   string
		taken func(key string) error
	}{
		{"RePutWithoutLease", func(key string) error {
			_, err := admin.Put(ctx, key, "operator")
			return err
		}},
		{"DeletedAndRecreated", func(key string) error {
			if _, err := admin.Delete(ctx, key); err != nil {
				return err
			}
			_, err := admin.Put(ctx, key, "operator")
			return err
		}},
	} {
		t.Run(tc.how, func(t *testing.T) {
			name := benchName(t)
			a := newLockClient(t, newClient(t, eps))
			la, err := a.Election(name).Campaign(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			key := queueKeys(t, ctx, admin, name)[0]
			if err := tc.taken(key); err != nil {
				t.Fatal(err)
			}
			if err := la.Proclaim(ctx, "zombie"); !errors.Is(err, dlock.ErrLockLost) {
				t.Errorf("Proclaim on a key that is not ours = %v, want ErrLockLost", err)
			}
			if v, _, ok := keyValue(t, ctx, admin, key); !ok || v != "operator" {
				t.Errorf("key after the refused Proclaim: %q (there: %v), want \"operator\"", v, ok)
			}
			select {
			case <-la.Done():
			case <-time.After(5 * time.Second):
				t.Errorf("leadership not ended 5 s after a refused Proclaim")
			}
			if _, err := admin.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			la.Resign(ctx) // ErrLockLost: only the lease's end
		})
	}
}

// TestCampaignLeaseExpiresWhileWaiting is etcd#11007, the zombie candidate:
// a candidate stalled off etcd while it waits loses its lease, and with it
// its key; the leader then resigns. When the candidate is back, the
// leader's deletion reaches it first or its keep-alive does: either way it
// must not be told it leads (its key is gone), and nothing of it remains.
func TestCampaignLeaseExpiresWhileWaiting(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	da := mustDriver(t, newClient(t, eps))
	cb := newConn(t, eps)
	db := mustDriver(t, cb.cli)

	la, _, err := da.Acquire(ctx, driver.Request{Name: name, TTL: longTTL, Wait: true, Value: "a"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, _, err := db.Acquire(ctx, driver.Request{Name: name, TTL: 2 * time.Second, Wait: true, Value: "zombie"})
		if err == nil {
			l.Release(ctx)
			err = errors.New("granted")
		}
		got <- err
	}()
	waitQueued(t, ctx, admin, name, 2)
	waiterKey := queueKeys(t, ctx, admin, name)[1]
	// Stalled, not reset: its watch stays up and hands it the leader's
	// deletion once the stall ends, as a paused process would see it.
	undo, err := cb.fault("", drivertest.Fault{Stall: true})
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	waitGone(t, ctx, admin, waiterKey, 10*time.Second) // its lease expired
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	undo()
	err = within(t, got, 15*time.Second, "candidate whose lease expired while it waited")
	if !errors.Is(err, driver.ErrLockLost) {
		t.Fatalf("candidate whose lease expired while it waited: %v, want ErrLockLost", err)
	}
	t.Logf("candidate whose lease expired while it waited: %v", err)
	if keys := queueKeys(t, ctx, admin, name); len(keys) != 0 {
		t.Errorf("keys left: %q", keys)
	}
}

// TestCampaignErrorLeavesNoKey is etcd#21128: a Campaign that fails leaves
// no candidate key behind, whether its wait ran out or its put's answer was
// lost (the key is then deleted in the background once etcd answers), so
// the next candidate is elected as soon as the leader resigns.
func TestCampaignErrorLeavesNoKey(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a := newLockClient(t, newClient(t, eps))
	cb := newConn(t, eps)
	b := newLockClient(t, cb.cli, dlock.WithTTL(longTTL))
	c := newLockClient(t, newClient(t, eps))
	keepAlive, err := b.Mutex(name + "/other").Lock(ctx) // keeps b's lease alive
	if err != nil {
		t.Fatal(err)
	}
	defer keepAlive.Unlock(ctx)

	la, err := a.Election(name).Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = b.Election(name).Campaign(wctx, "b-timed-out")
	wcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Campaign past its deadline = %v, want DeadlineExceeded", err)
	}
	if keys := queueKeys(t, ctx, admin, name); len(keys) != 1 {
		t.Errorf("keys after a timed-out Campaign: %q, want the leader's alone", keys)
	}

	// The put goes through; its answer does not.
	undo, err := cb.fault("", drivertest.Fault{Stall: true, Dir: drivertest.ToClient})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel = context.WithTimeout(ctx, time.Second)
	_, err = b.Election(name).Campaign(wctx, "b-lost-answer")
	wcancel()
	if err == nil {
		t.Fatal("Campaign without answers succeeded")
	}
	undo()
	deadline := time.Now().Add(10 * time.Second)
	for keys := queueKeys(t, ctx, admin, name); len(keys) != 1; keys = queueKeys(t, ctx, admin, name) {
		if time.Now().After(deadline) {
			t.Fatalf("keys 10 s after a Campaign whose answer was lost: %q, want the leader's alone", keys)
		}
		time.Sleep(20 * time.Millisecond) // the background delete has no event to wait on
	}
	cch := make(chan error, 1)
	go func() {
		lc, err := c.Election(name).Campaign(ctx, "c")
		if err == nil {
			err = lc.Resign(ctx)
		}
		cch <- err
	}()
	waitQueued(t, ctx, admin, name, 2)
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, cch, 5*time.Second, "candidate after the failed ones"); err != nil {
		t.Fatal(err)
	}
}

// TestCampaignPausedPastTTL is etcd#11007 as a pause shows it: the
// candidate's process stops for longer than its TTL (its lease is revoked
// and its clock moved past the lease's end, as a pause would leave them),
// and the first thing it hears when it runs again is the leader's
// deletion. That deletion alone would make it the leader; it must read its
// own key first and find it gone.
func TestCampaignPausedPastTTL(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	da := mustDriver(t, newClient(t, eps))
	db := mustDriver(t, newClient(t, eps)).(*Driver)

	la, _, err := da.Acquire(ctx, driver.Request{Name: name, TTL: longTTL, Wait: true, Value: "a"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		// A long TTL: its keep-alive, every TTL/3, does not come first.
		l, _, err := db.Acquire(ctx, driver.Request{Name: name, TTL: longTTL, Wait: true, Value: "zombie"})
		if err == nil {
			l.Release(ctx)
			err = errors.New("granted")
		}
		got <- err
	}()
	waitQueued(t, ctx, admin, name, 2)
	// Past its first re-read (once its watch is up) nothing tells when the
	// waiter sits on its watch alone: give it the time.
	time.Sleep(300 * time.Millisecond)
	db.mu.Lock()
	ls := db.leases[int64(longTTL/time.Second)]
	db.mu.Unlock()
	if _, err := admin.Revoke(ctx, ls.id); err != nil {
		t.Fatal(err)
	}
	ls.mu.Lock()
	ls.lastSent = time.Now().Add(-2 * longTTL)
	ls.mu.Unlock()
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	err = within(t, got, 5*time.Second, "candidate whose lease ended while it was paused")
	if !errors.Is(err, driver.ErrLockLost) {
		t.Fatalf("candidate whose lease ended while it was paused: %v, want ErrLockLost", err)
	}
	t.Logf("candidate whose lease ended while it was paused: %v", err)
	if keys := queueKeys(t, ctx, admin, name); len(keys) != 0 {
		t.Errorf("keys left: %q", keys)
	}
}
