package zklock

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestListModesAndHashedNames: List reports a reader's and a semaphore's
// status as Status does, and a name too long to be kept under its engine
// name ("~" and a hash), only when the prefix is empty.
func TestListModesAndHashedNames(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	c, d, _ := testClient(t, servers, testSession)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := uniqueName(t) + "/"
	r, err := c.RWMutex(base + "r").RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	defer r.Unlock(ctx)
	p, err := c.Semaphore(base+"s", 3).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer p.Unlock(ctx)
	long := base + strings.Repeat("x", 300)
	l, err := c.Mutex(long).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	defer l.Unlock(ctx)

	got, err := d.List(ctx, base)
	if err != nil {
		t.Fatalf("List(%q): %v", base, err)
	}
	want := []driver.Listed{
		{Name: base + "r", Status: driver.Status{Held: true, Token: r.Token(), Holders: 1, Mode: driver.Shared}},
		{Name: base + "s", Status: driver.Status{Held: true, Token: p.Token(), Holders: 1, Limit: 3}},
	}
	if len(got) != len(want) {
		t.Fatalf("List(%q) = %+v, want %+v (the hashed name left out)", base, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("List[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}

	hashed := encodeName(long)
	if !strings.HasPrefix(hashed, "~") {
		t.Fatalf("%d-byte name not hashed: %q", len(long), hashed)
	}
	all, err := d.List(ctx, "")
	if err != nil {
		t.Fatalf("List(\"\"): %v", err)
	}
	found := false
	for i, e := range all {
		if i > 0 && all[i-1].Name >= e.Name {
			t.Errorf("List(\"\") out of order: %q before %q", all[i-1].Name, e.Name)
		}
		if e.Name == hashed {
			found = true
			if !e.Status.Held || e.Status.Token != l.Token() {
				t.Errorf("hashed name listed as %+v, want held with token %d", e.Status, l.Token())
			}
		}
	}
	if !found {
		t.Errorf("List(\"\") has no %q (the hashed name)", hashed)
	}
}
