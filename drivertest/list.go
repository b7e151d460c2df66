package drivertest

import (
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// testList: a driver that can list reports exactly the locks held or
// awaited under a prefix, with their names as given (any bytes) and their
// holders' tokens, in name order.
func testList(t *testing.T, s *suite) {
	a, da := s.client(t)
	if _, ok := da.(driver.Lister); !ok {
		t.Skip("the driver cannot list locks (no driver.Lister)")
	}
	b, _ := s.client(t)
	base := lockName(t) + "/"
	names := []string{base + "a", base + "b with space/ü", base + "c.d"}
	var held []*dlock.Lease
	for _, n := range names {
		held = append(held, s.lock(t, a, n))
	}
	other := s.lock(t, a, lockName(t)+"-elsewhere")
	defer unlock(t, other)
	ch := s.lockAsync(s.ctx, b, names[0])
	waitQueued(t, a, names[0], 1)

	got, err := b.List(s.ctx, base)
	if err != nil {
		t.Fatalf("List(%q): %v", base, err)
	}
	if len(got) != len(names) {
		t.Fatalf("List(%q) = %d locks (%+v), want %d", base, len(got), got, len(names))
	}
	for i, l := range got {
		if l.Name != names[i] {
			t.Errorf("List[%d].Name = %q, want %q (names in byte order, as given)", i, l.Name, names[i])
		}
		if !l.Status.Held || l.Status.Token != held[i].Token() {
			t.Errorf("List[%d] = %+v, want held with token %d", i, l.Status, held[i].Token())
		}
	}
	if w := got[0].Status.Waiters; w != 1 && w != -1 {
		t.Errorf("List[0].Waiters = %d, want 1 (or -1: cannot tell)", w)
	}
	unlock(t, held[0])
	r := await(t, ch, 10*time.Second, "Lock of the listed name")
	if r.err != nil {
		t.Fatal(r.err)
	}
	unlock(t, r.l)
	for _, l := range held[1:] {
		unlock(t, l)
	}
	if got, err := b.List(s.ctx, base); err != nil || len(got) != 0 {
		t.Errorf("List(%q) after every unlock = %+v, %v; want none", base, got, err)
	}
}
