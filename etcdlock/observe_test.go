package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// leaders records the leaders elected, term by term, with every value each
// had, for checking what observers report.
type leaders struct {
	mu    sync.Mutex
	terms map[uint64][]string
}

func newLeaders() *leaders { return &leaders{terms: map[uint64][]string{}} }

func (ls *leaders) add(term uint64, value string) {
	ls.mu.Lock()
	ls.terms[term] = append(ls.terms[term], value)
	ls.mu.Unlock()
}

// check reports what is wrong with an observed sequence: a term below an
// earlier one (nobody aside), or a leader that was never elected with that
// value.
func (ls *leaders) check(seen []dlock.Leader) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var errs []error
	var last uint64
	for i, l := range seen {
		if l.Term == 0 {
			if l.Value != "" {
				errs = append(errs, fmt.Errorf("#%d: nobody with the value %q", i, l.Value))
			}
			continue
		}
		if l.Term < last {
			errs = append(errs, fmt.Errorf("#%d: term %d after term %d", i, l.Term, last))
		}
		last = l.Term
		found := false
		for _, v := range ls.terms[l.Term] {
			found = found || v == l.Value
		}
		if !found {
			errs = append(errs, fmt.Errorf("#%d: %+v, but the leader of term %d had the values %q", i, l, l.Term, ls.terms[l.Term]))
		}
	}
	return errors.Join(errs...)
}

// observeUntil reads ch until it receives want, appending what it receives
// to seen.
func observeUntil(t *testing.T, ch <-chan dlock.Leader, want dlock.Leader, seen *[]dlock.Leader, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("Observe's channel closed while waiting for %+v (seen %+v)", want, *seen)
			}
			*seen = append(*seen, l)
			if l == want {
				return
			}
		case <-deadline:
			t.Fatalf("Observe: %+v not received within %v (seen %+v)", want, within, *seen)
		}
	}
}

// testObserveAcrossFault: an observer whose connection (kind "" for all
// of it, "watch" for its watch stream) is down while the leader changes
// and proclaims, and, with compact, while the history it missed is
// compacted away, receives the latest leader once it is back, and nothing
// out of order on the way.
func testObserveAcrossFault(t *testing.T, eps []string, kind string, compact bool) {
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	co := newConn(t, eps)
	o := newLockClient(t, co.cli)
	a := newLockClient(t, newClient(t, eps))
	b := newLockClient(t, newClient(t, eps))
	known := newLeaders()
	var seen []dlock.Leader

	ch, err := o.Election(name).Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	observeUntil(t, ch, dlock.Leader{}, &seen, 10*time.Second)
	la, err := a.Election(name).Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	known.add(la.Term(), "a")
	observeUntil(t, ch, dlock.Leader{Value: "a", Term: la.Term()}, &seen, 10*time.Second)

	undo, err := co.fault(kind, drivertest.Fault{Down: true})
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Election(name).Campaign(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	known.add(lb.Term(), "b")
	known.add(lb.Term(), "b2")
	if err := lb.Proclaim(ctx, "b2"); err != nil {
		t.Fatal(err)
	}
	if compact {
		resp, err := admin.Get(ctx, "compact-marker")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
		t.Logf("compacted up to revision %d (leader a's term %d, b's %d)", resp.Header.Revision, la.Term(), lb.Term())
	}
	healed := time.Now()
	undo()
	observeUntil(t, ch, dlock.Leader{Value: "b2", Term: lb.Term()}, &seen, 20*time.Second)
	t.Logf("latest leader observed %v after the heal; seen %+v", time.Since(healed), seen)
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	observeUntil(t, ch, dlock.Leader{}, &seen, 10*time.Second)
	if err := known.check(seen); err != nil {
		t.Error(err)
	}
}

func TestObserveAcrossOutage(t *testing.T) {
	eps := testserver.Etcd(t)
	t.Run("Connection", func(t *testing.T) { testObserveAcrossFault(t, eps, "", false) })
	t.Run("WatchStream", func(t *testing.T) { testObserveAcrossFault(t, eps, "watch", false) })
}

// TestObserveAcrossCompaction runs on a cluster of its own: compacting the
// shared one would fail other tests' watches.
func TestObserveAcrossCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd server")
	}
	procs := testserver.StartEtcdCluster(t, 1)
	testObserveAcrossFault(t, []string{procs[0].Addr()}, "watch", true)
}

// TestObserveChurn: candidates campaign, proclaim and resign in turn while
// a slow observer reads; it may miss leaders but never receives one out of
// order or one that was not elected with that value, and ends on nobody.
func TestObserveChurn(t *testing.T) {
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	o := newLockClient(t, newClient(t, eps))
	known := newLeaders()
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	ch, err := o.Election(name).Observe(octx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 3 {
		c := newLockClient(t, newClient(t, eps))
		wg.Go(func() {
			for j := range 8 {
				v := fmt.Sprintf("%d:%d", i, j)
				l, err := c.Election(name).Campaign(ctx, v)
				if err != nil {
					t.Error(err)
					return
				}
				known.add(l.Term(), v)
				known.add(l.Term(), v+"+")
				if err := l.Proclaim(ctx, v+"+"); err != nil {
					t.Error(err)
				}
				if err := l.Resign(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var seen []dlock.Leader
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case l := <-ch:
			seen = append(seen, l)
			time.Sleep(time.Duration(rand.N(15)) * time.Millisecond) // a slow reader
		case <-done:
			running = false
		}
	}
	// The last resignation may have been received before done was.
	if len(seen) == 0 || seen[len(seen)-1] != (dlock.Leader{}) {
		observeUntil(t, ch, dlock.Leader{}, &seen, 10*time.Second)
	}
	terms := map[uint64]bool{}
	for _, l := range seen {
		terms[l.Term] = true
	}
	t.Logf("observed %d states, %d distinct terms, of %d leaders", len(seen), len(terms)-1, len(known.terms))
	if len(terms) < 3 {
		t.Errorf("observed %+v: fewer than two leaders of 24", seen)
	}
	if err := known.check(seen); err != nil {
		t.Error(err)
	}
	ocancel()
	for range ch { // closed with its context
	}
}

// TestObserveClosedDriver: a closed driver refuses Holder and Observe.
func TestObserveClosedDriver(t *testing.T) {
	eps := testserver.Etcd(t)
	d, err := NewDriver(newClient(t, eps), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Holder(context.Background(), "x"); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Holder on a closed driver = %v, want ErrClosed", err)
	}
	if _, err := d.Observe(context.Background(), "x"); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Observe on a closed driver = %v, want ErrClosed", err)
	}
}

// TestObserveReadersAreNobody: while readers hold the name, nobody leads,
// even with a candidate queued behind them; the candidate is observed once
// the readers leave.
func TestObserveReadersAreNobody(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	o := newLockClient(t, newClient(t, eps))
	a := newLockClient(t, newClient(t, eps))
	b := newLockClient(t, newClient(t, eps))
	r, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := o.Election(name).Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var seen []dlock.Leader
	observeUntil(t, ch, dlock.Leader{}, &seen, 10*time.Second)
	got := make(chan *dlock.Leadership, 1)
	go func() {
		l, err := b.Election(name).Campaign(ctx, "b")
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitQueued(t, ctx, admin, name, 2)
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lb := within(t, got, 10*time.Second, "candidate behind a reader")
	if lb == nil {
		t.FailNow()
	}
	observeUntil(t, ch, dlock.Leader{Value: "b", Term: lb.Term()}, &seen, 10*time.Second)
	if len(seen) != 2 {
		t.Errorf("observed %+v, want nobody then b", seen)
	}
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestObserveUnreachable: an Observe that cannot make its first read
// returns an error (ErrUnavailable, etcd out of reach) instead of a
// channel that never receives anything.
func TestObserveUnreachable(t *testing.T) {
	eps := testserver.Etcd(t)
	co := newConn(t, eps)
	o := newLockClient(t, co.cli)
	undo, err := co.fault("", drivertest.Fault{Down: true})
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	start := time.Now()
	ch, err := o.Election(benchName(t)).Observe(context.Background())
	if !errors.Is(err, dlock.ErrUnavailable) || ch != nil {
		t.Fatalf("Observe with etcd out of reach = %v, %v; want ErrUnavailable", ch, err)
	}
	t.Logf("Observe with etcd out of reach: %v after %v", err, time.Since(start))
	undo()
	ch, err = o.Election(benchName(t)).Observe(t.Context())
	if err != nil {
		t.Fatalf("Observe once etcd is back: %v", err)
	}
	if l := within(t, ch, 10*time.Second, "Observe once etcd is back"); l != (dlock.Leader{}) {
		t.Errorf("first state %+v, want nobody", l)
	}
}
