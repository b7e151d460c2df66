package etcdlock

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestList: List groups an etcd range by name and gives each name the
// status Status gives: readers, permits and a writer with a waiter, names
// of any bytes, only under the prefix.
func TestList(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := newLockClient(t, cli), newLockClient(t, cli)
	base := "list-" + t.Name() + "-" + time.Now().Format("150405.000000") + "/"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	r1, err := a.RWMutex(base + "a b/ü").RLock(ctx)
	must(err)
	r2, err := b.RWMutex(base + "a b/ü").RLock(ctx)
	must(err)
	p1, err := a.Semaphore(base+"c", 3).Acquire(ctx)
	must(err)
	w, err := a.Mutex(base + "d").Lock(ctx)
	must(err)
	wctx, wcancel := context.WithCancel(ctx)
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		if l, err := b.Mutex(base + "d").Lock(wctx); err == nil {
			l.Unlock(context.Background())
		}
	}()
	other, err := a.Mutex(base[:len(base)-1] + "-other").Lock(ctx)
	must(err)

	deadline := time.Now().Add(10 * time.Second)
	var got []driver.Listed
	for {
		got, err = a.List(ctx, base)
		must(err)
		if len(got) == 3 && got[2].Status.Waiters == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the waiter's key: no event to wait on from here
	}
	want := []struct {
		name    string
		mode    driver.Mode
		holders int
		limit   int
		waiters int
		token   uint64
	}{
		{base + "a b/ü", driver.Shared, 2, 0, 0, r2.Token()},
		{base + "c", driver.Exclusive, 1, 3, 0, p1.Token()},
		{base + "d", driver.Exclusive, 1, 0, 1, w.Token()},
	}
	if len(got) != len(want) {
		t.Fatalf("List(%q) = %+v, want %d names", base, got, len(want))
	}
	for i, w := range want {
		st := got[i].Status
		if got[i].Name != w.name || !st.Held || st.Mode != w.mode || st.Holders != w.holders || st.Limit != w.limit || st.Waiters != w.waiters || st.Token != w.token || st.TTLLeft <= 0 {
			t.Errorf("List[%d] = %q %+v, want %q mode %v holders %d limit %d waiters %d token %d and a TTL", i, got[i].Name, st, w.name, w.mode, w.holders, w.limit, w.waiters, w.token)
		}
	}
	wcancel()
	<-waited
	for _, l := range []interface{ Unlock(context.Context) error }{r1, r2, p1, w, other} {
		must(l.Unlock(ctx))
	}
	got, err = a.List(ctx, base)
	if err != nil || len(got) != 0 {
		t.Errorf("List after every unlock = %+v, %v", got, err)
	}
}
