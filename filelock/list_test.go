package filelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// TestList: List reports every name held or awaited under a prefix, as
// given (escaped bytes restored, a hashed name as "~" and its hash, only
// without a prefix), with what Status says of it: a writer with a waiter,
// readers, a semaphore's permits and waiter, a name only awaited. Names
// whose files are stale (released, a cancelled wait, a semaphore given
// back) and files no name has are left out.
func TestList(t *testing.T) {
	dir := t.TempDir()
	a, b, c := newClient(t, dir), newClient(t, dir), newClient(t, dir)
	ctx := t.Context()
	must := func(l *dlock.Lease, err error) *dlock.Lease {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Unlock(context.Background()) })
		return l
	}
	long := strings.Repeat("j", 250)
	sum := sha256.Sum256([]byte(long))
	hashed := "~" + hex.EncodeToString(sum[:])

	// Stale: released, a cancelled wait behind a holder since gone, a
	// semaphore given back.
	must(a.Mutex("jobs/old").Lock(ctx)).Unlock(ctx)
	gone := must(a.Mutex("jobs/gone").Lock(ctx))
	wctx, wcancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { _, err := b.Mutex("jobs/gone").Lock(wctx); waited <- err }()
	parked(t, 1)
	wcancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock = %v", err)
	}
	gone.Unlock(ctx)
	must(a.Semaphore("jobs/oldsem", 2).Acquire(ctx)).Unlock(ctx)
	must(a.RWMutex("jobs/oldr").RLock(ctx)).Unlock(ctx)
	// Files no lock name has.
	for _, f := range []string{"notes.txt", "x.y.lock", "~zz.lock", "%zz.lock", "a%41.lock", ".lock", "jobs%2Fq.permit1", "jobs%2Fq.leader"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	w := must(a.Mutex("jobs/b c/ü").Lock(ctx))
	r1 := must(a.RWMutex("jobs/r").RLock(ctx))
	r2 := must(b.RWMutex("jobs/r").RLock(ctx))
	p1 := must(a.Semaphore("jobs/s", 2).Acquire(ctx))
	p2 := must(b.Semaphore("jobs/s", 2).Acquire(ctx))
	x := must(a.Mutex("jobsx").Lock(ctx))
	h := must(a.Mutex(long).Lock(ctx))
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	queued := make(chan error, 2)
	go func() { _, err := c.Mutex("jobs/b c/ü").Lock(qctx); queued <- err }()
	go func() { _, err := c.Semaphore("jobs/s", 2).Acquire(qctx); queued <- err }()
	parked(t, 2)
	// A writer about to wait: its mark on a free lock (a moment that
	// passes in real life, held here).
	d := a.Driver().(*fileDriver)
	mark, err := d.markWaiting(fileName("jobs/w"), nil, true)
	if err != nil {
		t.Fatal(err)
	}

	want := []driver.Listed{
		{Name: "jobs/b c/ü", Status: driver.Status{Held: true, Token: w.Token(), Waiters: 1, Holders: 1}},
		{Name: "jobs/r", Status: driver.Status{Held: true, Token: r2.Token(), Waiters: 0, Holders: 2, Mode: driver.Shared}},
		{Name: "jobs/s", Status: driver.Status{Held: true, Token: p2.Token(), Waiters: 1, Holders: 2, Limit: 2}},
		{Name: "jobs/w", Status: driver.Status{Waiters: 1}},
	}
	list := func(prefix string) []driver.Listed {
		t.Helper()
		got, err := c.List(ctx, prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		return got
	}
	names := func(ls []driver.Listed) []string {
		var ns []string
		for _, l := range ls {
			ns = append(ns, l.Name)
		}
		return ns
	}
	got := list("jobs/")
	if !slices.Equal(got, want) {
		t.Errorf("List(jobs/) =\n%+v\nwant\n%+v", got, want)
	}
	for _, l := range got { // and each is what Status says
		if st, err := b.Status(ctx, l.Name); err != nil || st != l.Status {
			t.Errorf("Status(%q) = %+v, %v; List said %+v", l.Name, st, err, l.Status)
		}
	}
	for prefix, wantNames := range map[string][]string{
		"":         {"jobs/b c/ü", "jobs/r", "jobs/s", "jobs/w", "jobsx", hashed},
		"jobs":     {"jobs/b c/ü", "jobs/r", "jobs/s", "jobs/w", "jobsx"},
		"jobs/b":   {"jobs/b c/ü"},
		"jobs/b c": {"jobs/b c/ü"},
		"jobs/r":   {"jobs/r"},
		"jjjjj":    nil, // the hashed name's own prefix: its name is not kept
		"~":        nil,
		"zzz":      nil,
	} {
		if got := names(list(prefix)); !slices.Equal(got, wantNames) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, wantNames)
		}
	}
	if got := list(""); len(got) == 6 && got[5].Status != (driver.Status{Held: true, Token: h.Token(), Holders: 1}) {
		t.Errorf("the hashed name's Status = %+v, want held with token %d", got[5].Status, h.Token())
	}

	// All given back: nothing is listed, the files stay.
	mark.Close()
	qcancel()
	for range 2 {
		if err := <-queued; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait = %v", err)
		}
	}
	for _, l := range []*dlock.Lease{w, r1, r2, p1, p2, x, h} {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(""); len(got) != 0 {
		t.Errorf("List() with nothing held or awaited = %+v, want none", got)
	}
}

// TestListErrors: a cancelled context and a closed client are errors.
func TestListErrors(t *testing.T) {
	dir := t.TempDir()
	c := newClient(t, dir)
	l, err := c.Mutex("x").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a cancelled context = %v, want context.Canceled", err)
	}
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := d.List(t.Context(), ""); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("List after Close = %v, want ErrClosed", err)
	}
}
