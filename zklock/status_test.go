package zklock

import (
	"context"
	"testing"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestStatusHoldersModeLimit: Status tells the holders apart from the
// waiters for a writer, readers and a semaphore's permits, and gives the
// newest holder's token.
func TestStatusHoldersModeLimit(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	ca, _, _ := testClient(t, servers, testSession)
	cb, _, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	status := func(name string) driver.Status {
		t.Helper()
		st, err := ca.Status(ctx, name)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		return st
	}
	name := uniqueName(t)
	if st := status(name); st != (driver.Status{}) {
		t.Errorf("Status of a lock never taken = %+v, want the zero Status", st)
	}

	r1, err := ca.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	r2, err := cb.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	w := async(func() (*dlock.Lease, error) { return cb.Mutex(name).Lock(ctx) })
	awaitQueue(t, admin, name, 3)
	want := driver.Status{Held: true, Token: r2.Token(), Waiters: 1, Holders: 2, Mode: driver.Shared}
	if st := status(name); st != want {
		t.Errorf("two readers, a writer waiting: Status = %+v, want %+v", st, want)
	}
	unlock(t, r1)
	unlock(t, r2)
	wl := mustGet(t, w, "writer")
	want = driver.Status{Held: true, Token: wl.Token(), Holders: 1, Mode: driver.Exclusive}
	if st := status(name); st != want {
		t.Errorf("a writer: Status = %+v, want %+v", st, want)
	}
	unlock(t, wl)

	sem := uniqueName(t)
	var held []*dlock.Lease
	for i := range 3 {
		c := []*dlock.Client{ca, cb}[i%2]
		l, err := c.Semaphore(sem, 3).Acquire(ctx)
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		held = append(held, l)
	}
	p := async(func() (*dlock.Lease, error) { return ca.Semaphore(sem, 3).Acquire(ctx) })
	awaitQueue(t, admin, sem, 4)
	want = driver.Status{Held: true, Token: held[2].Token(), Waiters: 1, Holders: 3, Mode: driver.Exclusive, Limit: 3}
	if st := status(sem); st != want {
		t.Errorf("3 permits of 3 held, one waiting: Status = %+v, want %+v", st, want)
	}
	unlock(t, held[0])
	mustGet(t, p, "waiting permit")
}
