package redislock

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestFairness tells the modes apart. A waiter W is queued, and its
// client's pub/sub connection is stalled, so it hears of no release until
// the end: every outcome below is the server's decision.
//
// FIFO: the holder's release hands the lock to W, so the holder cannot take
// it back at once. Barging (W's StarvationBound 1 s): releases leave the
// lock free for anyone (here: the holder, locking again) while W has been
// at the head of the queue for less than its bound, and W keeps its place;
// once it has been there longer, a release hands it the lock as FIFO does.
// W then holds it with a later token than every earlier holder.
func TestFairness(t *testing.T) {
	addr := testserver.Redis(t)[0]
	for _, mode := range []Fairness{FIFO, Barging} {
		t.Run(mode.String(), func(t *testing.T) { fairness(t, addr, mode) })
	}
}

func fairness(t *testing.T, addr string, mode Fairness) {
	ctx := context.Background()
	ttl := dlock.WithTTL(30 * time.Second)
	const bound = time.Second
	holder, err := New(adminClient(t, addr), &Options{Fairness: mode}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	rdb, proxy := proxied(t, addr)
	w, err := New(rdb, &Options{Fairness: mode, StarvationBound: bound}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	name := uniqueName(t)
	m := holder.Mutex(name)

	l, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chW := lockAsync(ctx, w.Mutex(name))
	waitFor(t, 10*time.Second, "W to queue", func() bool {
		st, err := holder.Status(ctx, name)
		return err == nil && st.Waiters == 1
	})
	undo := proxy.Add(pubsubConn, faultproxy.Fault{Stall: true})
	defer undo()

	// relock releases l and locks again at once.
	relock := func(l *dlock.Lease) (*dlock.Lease, error) {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		again, err := m.TryLock(ctx)
		if err != nil && !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatal(err)
		}
		return again, err
	}
	first := time.Now() // after W queued, at the head: its bound runs from then
	last := l.Token()
	if mode == FIFO {
		if again, err := relock(l); err == nil {
			t.Fatalf("FIFO: the releaser took the lock back (token %d) from the waiter it should have been handed to", again.Token())
		}
	} else {
		// Twice: W's place and its bound's clock stay as they were.
		for i := range 2 {
			again, err := relock(l)
			if err != nil {
				if time.Since(first) >= bound {
					t.Skipf("too slow to tell: %v since the first release", time.Since(first))
				}
				t.Fatalf("Barging: release %d: the releaser could not take the lock back while W had waited less than its bound: %v", i+1, err)
			}
			l, last = again, again.Token()
		}
		if st, err := holder.Status(ctx, name); err != nil || st.Waiters != 1 {
			t.Fatalf("Barging: W lost its place: Status %+v, %v", st, err)
		}
		// The bound is the waiter's clock: let it run out.
		time.Sleep(time.Until(first.Add(bound + 100*time.Millisecond)))
		if again, err := relock(l); err == nil {
			t.Fatalf("Barging: the releaser took the lock back (token %d) from a waiter past its bound", again.Token())
		}
	}

	undo()
	select {
	case r := <-chW:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Token() <= last {
			t.Errorf("W holds token %d, not after the last holder's %d", r.l.Token(), last)
		}
		if err := r.l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("W did not get the lock")
	}
}

// TestBargingIdle: a release by the last holder leaves the lock free and
// wakes nobody while the barging waiter at the head is within its bound;
// the waiter takes the lock by itself when its bound is up, with no
// message (its pub/sub connection is stalled throughout). FIFO's hand-over
// would reach it only through the stalled connection.
func TestBargingIdle(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	ttl := dlock.WithTTL(30 * time.Second)
	const bound = 300 * time.Millisecond
	holder := newClient(t, adminClient(t, addr), ttl)
	rdb, proxy := proxied(t, addr)
	w, err := New(rdb, &Options{Fairness: Barging, StarvationBound: bound}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	name := uniqueName(t)

	l, err := holder.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chW := lockAsync(ctx, w.Mutex(name))
	waitFor(t, 10*time.Second, "W to queue", func() bool {
		st, err := holder.Status(ctx, name)
		return err == nil && st.Waiters == 1
	})
	undo := proxy.Add(pubsubConn, faultproxy.Fault{Stall: true})
	defer undo()
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-chW:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.l.Token() <= l.Token() {
			t.Errorf("W holds token %d, not after the holder's %d", r.l.Token(), l.Token())
		}
		if err := r.l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(bound + 5*time.Second):
		t.Fatal("the free lock stayed free: W did not take it when its bound was up")
	}
}

// TestBargingNewHead: W2, barging with a bound of 300 ms, queues behind
// W1, which its client (FIFO) has handed the lock. When W1 releases, W2
// is new at the head: the release leaves the lock free for others and
// tells W2 to try when its bound is up, rather than waking it to race for
// the lock (or handing it over). Nobody else asks, so W2 takes the lock
// then: not before its bound, and not much later.
func TestBargingNewHead(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	ttl := dlock.WithTTL(30 * time.Second)
	const bound = 300 * time.Millisecond
	holder := newClient(t, adminClient(t, addr), ttl)
	w1 := newClient(t, adminClient(t, addr), ttl)
	w2, err := New(adminClient(t, addr), &Options{Fairness: Barging, StarvationBound: bound}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w2.Close() })
	name := uniqueName(t)
	waiters := func(n int) func() bool {
		return func() bool {
			st, err := holder.Status(ctx, name)
			return err == nil && st.Waiters == n
		}
	}

	l, err := holder.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch1 := lockAsync(ctx, w1.Mutex(name))
	waitFor(t, 10*time.Second, "W1 to queue", waiters(1))
	ch2 := lockAsync(ctx, w2.Mutex(name))
	waitFor(t, 10*time.Second, "W2 to queue", waiters(2))
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	var l1 *dlock.Lease
	select {
	case r := <-ch1:
		if r.err != nil {
			t.Fatal(r.err)
		}
		l1 = r.l
	case <-time.After(10 * time.Second):
		t.Fatal("W1 was not handed the lock")
	}
	released := time.Now()
	if err := l1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch2:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if took := r.at.Sub(released); took < bound {
			t.Errorf("W2 took the lock %v after W1's release, before its bound of %v was up", took, bound)
		}
		if r.l.Token() <= l1.Token() {
			t.Errorf("W2 holds token %d, not after W1's %d", r.l.Token(), l1.Token())
		}
		if err := r.l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(bound + 5*time.Second):
		t.Fatal("the free lock stayed free: W2 did not take it when its bound was up")
	}
}

// TestFairnessURL: a URL's fairness parameter sets Options.Fairness.
func TestFairnessURL(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	for _, c := range []struct {
		param string
		barge bool
		bad   bool
	}{{"", true, false}, {"fifo", false, false}, {"barging", true, false}, {"fair", false, true}} {
		u, err := url.Parse("redis://" + addr + "/0?fairness=" + c.param)
		if err != nil {
			t.Fatal(err)
		}
		d, err := openURL(ctx, u)
		if c.bad {
			if !errors.Is(err, driver.ErrInvalidArgument) {
				t.Errorf("fairness=%s: got %v, want ErrInvalidArgument", c.param, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("fairness=%s: %v", c.param, err)
		}
		if got := d.(*Driver).barge > 0; got != c.barge {
			t.Errorf("fairness=%s: barging %v, want %v", c.param, got, c.barge)
		}
		d.Close()
	}
}
