package filelock

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// TestStatusModes: Status tells a free lock, a writer, readers (counted)
// and a semaphore's permits in use, with the newest holder's token.
func TestStatusModes(t *testing.T) {
	dir := t.TempDir()
	var cs []*dlock.Client
	for range 3 {
		c, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	status := func(name string) dlock.Status {
		t.Helper()
		st, err := cs[0].Status(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	check := func(what string, got dlock.Status, held bool, mode driver.Mode, holders, limit int, token uint64) {
		t.Helper()
		waiters := 0
		if got.Held != held || got.Mode != mode || got.Holders != holders || got.Limit != limit || got.Token != token || got.Waiters != waiters {
			t.Errorf("%s: Status = %+v; want Held %v, Mode %v, Holders %d, Limit %d, Token %d, Waiters %d",
				what, got, held, mode, holders, limit, token, waiters)
		}
	}
	check("never used", status("x"), false, driver.Exclusive, 0, 0, 0)

	w, err := cs[1].RWMutex("x").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	check("a writer", status("x"), true, driver.Exclusive, 1, 0, w.Token())
	// Waiting readers and writers are counted, across clients.
	wctx, wcancel := context.WithCancel(t.Context())
	queued := make(chan error, 3)
	for _, acquire := range []func(context.Context) (*dlock.Lease, error){
		cs[0].RWMutex("x").RLock, cs[2].RWMutex("x").RLock, cs[2].Mutex("x").Lock,
	} {
		go func() {
			_, err := acquire(wctx)
			queued <- err
		}()
	}
	parked(t, 3)
	if st := status("x"); st.Waiters != 3 || st.Holders != 1 {
		t.Errorf("a writer, 2 readers and a writer waiting: Status = %+v", st)
	}
	wcancel()
	for range 3 {
		if err := <-queued; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait = %v", err)
		}
	}
	w.Unlock(t.Context())
	check("free", status("x"), false, driver.Exclusive, 0, 0, 0)

	var last uint64
	for i, c := range cs {
		r, err := c.RWMutex("x").RLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer r.Unlock(t.Context())
		last = r.Token()
		check("readers", status("x"), true, driver.Shared, i+1, 0, last)
	}

	var held []*dlock.Lease
	for i, c := range cs[:2] {
		p, err := c.Semaphore("s", 3).Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, p)
		check("permits", status("s"), true, driver.Exclusive, i+1, 3, p.Token())
	}
	held[1].Unlock(t.Context())
	check("one permit", status("s"), true, driver.Exclusive, 1, 3, held[0].Token())
	// A semaphore's waiters are counted.
	full := make([]*dlock.Lease, 2)
	for i := range full {
		if full[i], err = cs[1].Semaphore("s", 3).Acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	waiting := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := cs[2].Semaphore("s", 3).Acquire(ctx)
			waiting <- err
		}()
	}
	parked(t, 2)
	if st := status("s"); st.Holders != 3 || st.Waiters != 2 {
		t.Errorf("3 permits held, 2 waiting: Status = %+v", st)
	}
	cancel()
	for range 2 {
		if err := <-waiting; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Acquire = %v", err)
		}
	}
	for _, l := range full {
		l.Unlock(t.Context())
	}
	if st := status("s"); st.Holders != 1 || st.Waiters != 0 {
		t.Errorf("1 permit held, none waiting: Status = %+v", st)
	}
	mustHold(t, held[0])
	held[0].Unlock(t.Context())
	check("no permit", status("s"), false, driver.Exclusive, 0, 0, 0)
}

func mustHold(t *testing.T, l *dlock.Lease) {
	t.Helper()
	select {
	case <-l.Done():
		t.Fatalf("lease %q (token %d) ended: %v", l.Name(), l.Token(), l.Err())
	default:
	}
}

// TestLockCounts: /proc/locks lines are counted by kind, type and inode,
// waiting requests left out.
func TestLockCounts(t *testing.T) {
	text := []byte(`1: FLOCK  ADVISORY  READ  5587 fe:00:99 0 EOF
1: -> FLOCK  ADVISORY  WRITE 5590 fe:00:99 0 EOF
2: OFDLCK ADVISORY  READ  -1 fe:00:99 0 EOF
3: FLOCK  ADVISORY  READ  5531 fe:00:99 0 EOF
4: FLOCK  ADVISORY  READ  5531 fe:00:990 0 EOF
5: FLOCK  ADVISORY  WRITE 24302 fe:01:99 0 EOF
`)
	dev := unix.Mkdev(0xfe, 0)
	counts := lockCounts(text)
	if n := counts[lockKey("FLOCK", "READ", dev, 99)]; n != 2 {
		t.Errorf("lockCounts: FLOCK READ fe:00:99 = %d, want 2", n)
	}
	if n := counts[lockKey("OFDLCK", "READ", dev, 99)]; n != 1 {
		t.Errorf("lockCounts: OFDLCK READ fe:00:99 = %d, want 1", n)
	}
	if n := counts[lockKey("FLOCK", "WRITE", dev, 99)]; n != 0 {
		t.Errorf("lockCounts: FLOCK WRITE fe:00:99 = %d, want 0 (the waiting request is no lock)", n)
	}
}
