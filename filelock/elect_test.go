package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func newClient(t *testing.T, dir string) *dlock.Client {
	t.Helper()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nextLeader reads ch until it receives want (other leaders on the way are
// allowed), within 5 s.
func nextLeader(t *testing.T, ch <-chan dlock.Leader, want dlock.Leader) time.Time {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("Observe's channel closed while waiting for %+v", want)
			}
			if got == want {
				return time.Now()
			}
		case <-timeout:
			t.Fatalf("Observe: %+v not received within 5 s", want)
		}
	}
}

// TestElectionValueConsistent: candidates take turns leading, each
// proclaiming values of its own (long ones, of one repeated letter);
// meanwhile readers call Leader and an observer follows. No read ever pairs
// a term with another leader's value or with half of a value, and terms
// never go back.
func TestElectionValueConsistent(t *testing.T) {
	dir := t.TempDir()
	const candidates, terms, proclaims, readers = 4, 40, 5, 3
	value := func(id, seq int) string {
		return fmt.Sprintf("%d:%d:", id, seq) + strings.Repeat(string(rune('a'+id)), 3000+100*seq)
	}
	var (
		mu    sync.Mutex
		owner = map[uint64]int{} // term -> candidate
	)
	check := func(who string, l dlock.Leader) {
		if l.Term == 0 {
			if l.Value != "" {
				t.Errorf("%s: no leader, with value %.20q", who, l.Value)
			}
			return
		}
		var id, seq int
		if _, err := fmt.Sscanf(l.Value, "%d:%d:", &id, &seq); err != nil || value(id, seq) != l.Value {
			t.Errorf("%s: term %d with a value no candidate proclaimed whole (%d bytes, %.20q)", who, l.Term, len(l.Value), l.Value)
			return
		}
		mu.Lock()
		o, ok := owner[l.Term]
		mu.Unlock()
		if ok && o != id {
			t.Errorf("%s: term %d (candidate %d's) with candidate %d's value", who, l.Term, o, id)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var seen sync.Map // reads to check once every term's owner is known
	var rg sync.WaitGroup
	for r := range readers {
		c := newClient(t, dir)
		rg.Add(1)
		go func() {
			defer rg.Done()
			var last uint64
			for n := 0; ctx.Err() == nil; n++ {
				l, err := c.Election("e").Leader(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("Leader: %v", err)
					}
					return
				}
				if l.Term != 0 && l.Term < last {
					t.Errorf("reader %d: term %d after term %d", r, l.Term, last)
				}
				last = max(last, l.Term)
				seen.Store(fmt.Sprint(r, n), l)
			}
		}()
	}
	oc := newClient(t, dir)
	looks0 := observerLooks.Load()
	och, err := oc.Election("e").Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var observed []dlock.Leader
	fwd := make(chan dlock.Leader, 1<<16)
	odone := make(chan struct{})
	go func() {
		defer close(odone)
		defer close(fwd)
		for l := range och {
			observed = append(observed, l)
			fwd <- l
		}
	}()

	began := time.Now()
	var cg sync.WaitGroup
	turns := make(chan int, terms)
	for i := range terms {
		turns <- i
	}
	close(turns)
	for id := range candidates {
		c := newClient(t, dir)
		cg.Add(1)
		go func() {
			defer cg.Done()
			for range turns {
				l, err := c.Election("e").Campaign(t.Context(), value(id, 0))
				if err != nil {
					t.Errorf("Campaign: %v", err)
					return
				}
				mu.Lock()
				owner[l.Term()] = id
				mu.Unlock()
				for seq := 1; seq <= proclaims; seq++ {
					if err := l.Proclaim(t.Context(), value(id, seq)); err != nil {
						t.Errorf("Proclaim: %v", err)
					}
				}
				if err := l.Resign(t.Context()); err != nil {
					t.Errorf("Resign: %v", err)
				}
			}
		}()
	}
	cg.Wait()
	took := time.Since(began)
	// Nobody leads at the end: the observer gets there.
	nextLeader(t, fwd, dlock.Leader{})
	cancel()
	rg.Wait()
	<-odone
	n := 0
	seen.Range(func(_, v any) bool {
		n++
		check("Leader", v.(dlock.Leader))
		return true
	})
	var last uint64
	for _, l := range observed {
		check("Observe", l)
		if l.Term != 0 && l.Term < last {
			t.Errorf("observed term %d after term %d", l.Term, last)
		}
		last = max(last, l.Term)
	}
	if len(owner) != terms {
		t.Errorf("%d terms granted, want %d", len(owner), terms)
	}
	t.Logf("%v: %d terms, %d Leader reads, %d observed states (%d looks)", took, len(owner), n, len(observed), observerLooks.Load()-looks0)
}

// TestSetValueOwnerChecked: SetValue changes nothing once the lock is
// lost or released; it is not offered on a reader's lock; a value too long
// is refused; a leader file removed under a leader is written again by its
// next SetValue.
func TestSetValueOwnerChecked(t *testing.T) {
	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := t.Context()
	l, _, err := d.Acquire(ctx, driver.Request{Name: "x", TTL: time.Minute, Value: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	vs := l.(driver.ValueSetter)
	if err := vs.SetValue(ctx, strings.Repeat("v", maxValue+1)); !errors.Is(err, driver.ErrInvalidArgument) {
		t.Errorf("SetValue of %d bytes = %v, want ErrInvalidArgument", maxValue+1, err)
	}
	if h, err := d.Holder(ctx, "x"); err != nil || h != (driver.Holder{Token: l.Token(), Value: "v1"}) {
		t.Errorf("Holder after a refused SetValue = %+v, %v", h, err)
	}
	if err := os.Remove(dir + "/" + valueName(fileName("x"))); err != nil {
		t.Fatal(err)
	}
	if h, err := d.Holder(ctx, "x"); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder with the leader file removed = %+v, %v; want nobody", h, err)
	}
	if err := vs.SetValue(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	if h, err := d.Holder(ctx, "x"); err != nil || h != (driver.Holder{Token: l.Token(), Value: "v2"}) {
		t.Errorf("Holder after SetValue made the leader file again = %+v, %v", h, err)
	}
	if err := (harness{dir}).ForceLoss(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed 5 s after the lock file was replaced")
	}
	if err := vs.SetValue(ctx, "zombie"); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("SetValue after the loss = %v, want ErrLockLost", err)
	}
	if h, err := d.Holder(ctx, "x"); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder after the leader's loss = %+v, %v; want nobody", h, err)
	}
	l.Release(ctx)
	l2, _, err := d.Acquire(ctx, driver.Request{Name: "x", TTL: time.Minute, Value: "v3"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l2.(driver.ValueSetter).SetValue(ctx, "late"); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("SetValue after Release = %v, want ErrLockLost", err)
	}
	if h, err := d.Holder(ctx, "x"); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder after Release = %+v, %v; want nobody", h, err)
	}
	r, _, err := d.Acquire(ctx, driver.Request{Name: "x", TTL: time.Minute, Mode: driver.Shared})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release(ctx)
	if err := r.(driver.ValueSetter).SetValue(ctx, "reader"); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("SetValue on a reader's lock = %v, want ErrNotSupported", err)
	}
}

// TestLeaderFileSymlinkNotFollowed: a symlink where the leader file goes
// makes an exclusive grant fail, saying so, with the lock given back, and
// nothing is written through it; Leader reports it too.
func TestLeaderFileSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := t.TempDir() + "/victim"
	if err := os.Symlink(victim, dir+"/"+valueName(fileName("x"))); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, dir)
	l, err := c.Mutex("x").TryLock(t.Context())
	if err == nil {
		l.Unlock(t.Context())
	}
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("TryLock with a symlink at the leader file = %v; want an error saying so", err)
	}
	r, err := c.RWMutex("x").TryRLock(t.Context()) // the lock was given back; readers need no leader file
	if err != nil {
		t.Fatalf("TryRLock after the failed grant: %v", err)
	}
	if got, err := c.Election("x").Leader(t.Context()); err == nil {
		t.Errorf("Leader through a symlink = %+v, want an error", got)
	}
	r.Unlock(t.Context())
	if _, err := os.Lstat(victim); err == nil {
		t.Errorf("a file was created through the symlink at %s", victim)
	}
}
