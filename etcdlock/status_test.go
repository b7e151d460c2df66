package etcdlock

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestStatusModes: Status counts the holders of each kind of name: one
// writer, the readers ahead of the first writer, the first n permits; the
// rest are waiters; the token is the newest holder's.
func TestStatusModes(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := newLockClient(t, cli), newLockClient(t, cli)
	status := func(name string, want driver.Status) {
		t.Helper()
		st, err := a.Status(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if st.TTLLeft <= 0 || st.TTLLeft > dlock.DefaultTTL {
			t.Errorf("Status(%q).TTLLeft = %v, want in (0, %v]", name, st.TTLLeft, dlock.DefaultTTL)
		}
		st.TTLLeft = 0
		if st != want {
			t.Errorf("Status(%q) = %+v, want %+v", name, st, want)
		}
	}
	waiting := func(name string, n int, acquire func(context.Context) (*dlock.Lease, error)) context.CancelFunc {
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if l, err := acquire(wctx); err == nil {
				t.Errorf("%q: a waiter of the status test was granted (token %d)", name, l.Token())
				l.Unlock(ctx)
			}
		}()
		waitQueued(t, ctx, cli, name, n)
		return func() { wcancel(); <-done }
	}

	rw := benchName(t)
	r1, err := a.RWMutex(rw).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.RWMutex(rw).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop := waiting(rw, 3, b.RWMutex(rw).Lock)
	status(rw, driver.Status{Held: true, Token: r2.Token(), Waiters: 1, Holders: 2, Mode: driver.Shared})
	stop()
	r1.Unlock(ctx)
	r2.Unlock(ctx)

	w, err := a.RWMutex(rw).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop = waiting(rw, 2, b.RWMutex(rw).RLock)
	status(rw, driver.Status{Held: true, Token: w.Token(), Waiters: 1, Holders: 1, Mode: driver.Exclusive})
	stop()
	w.Unlock(ctx)

	sem := benchName(t)
	var ps []*dlock.Lease
	for range 2 {
		p, err := a.Semaphore(sem, 3).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	status(sem, driver.Status{Held: true, Token: ps[1].Token(), Waiters: 0, Holders: 2, Limit: 3})
	p, err := b.Semaphore(sem, 3).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps = append(ps, p)
	stop = waiting(sem, 4, b.Semaphore(sem, 3).Acquire)
	status(sem, driver.Status{Held: true, Token: p.Token(), Waiters: 1, Holders: 3, Limit: 3})
	stop()
	for _, p := range ps {
		p.Unlock(ctx)
	}
	st, err := a.Status(ctx, sem)
	if err != nil || st != (driver.Status{}) {
		t.Errorf("Status of a free name = %+v, %v; want the zero Status", st, err)
	}
}
