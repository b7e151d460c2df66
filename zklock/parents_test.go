package zklock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestFreshNamesRequests: a client taking names no one has used sends, per
// grant, the parent's create and the multi that creates its node, and no
// listing of the queue (the multi's reply shows the node alone), where it
// sent 7 requests before (a multi failing for want of a parent, the root's
// create, the parent's, the multi again, two listings, the own-node stat).
func TestFreshNamesRequests(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx := context.Background()
	var ops opCounter
	c, err := Dial(ctx, servers, &Options{Prefix: testRoot, Dialer: ops.dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run := "fresh/" + newGUID()[:8]
	lock := func(name string) *dlock.Lease {
		t.Helper()
		l, err := c.Mutex(name).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// The first fresh names teach the driver that unseen parents are
	// missing (parents.go).
	for i := range 3 {
		lock(fmt.Sprintf("%s/warm-%d", run, i)).Unlock(ctx)
	}
	const n = 20
	ops.reset()
	alone0 := aloneGrants.Load()
	leases := make([]*dlock.Lease, n)
	for i := range leases {
		leases[i] = lock(fmt.Sprintf("%s/%d", run, i))
	}
	sent := ops.snapshot()
	t.Logf("requests per grant: %s", sent.per(n))
	for _, l := range leases {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := sent["getChildren2"] + sent["getChildren"]; got != 0 {
		t.Errorf("%d queue listings for %d uncontended grants of fresh names, want 0", got, n)
	}
	if got := aloneGrants.Load() - alone0; got != n {
		t.Errorf("%d grants on the create's reply alone, want %d", got, n)
	}
	// The parent's create and the multi go out back to back from two
	// goroutines; a multi that overtakes it fails and is sent again after
	// it, with a second create of the parent: two writes more, now and then.
	misses := sent["multi"] - n
	if w := sent["multi"] + sent["createContainer"] + sent["create"]; w != 2*n+2*misses || misses > n/4 {
		t.Errorf("%d writes for %d grants of fresh names (%v), want %d (the parent's create and the multi) and 2 more per multi sent again", w, n, sent, 2*n)
	}

	// A name taken again: its parent is there and known, one write (two
	// more should the server have removed the empty container meanwhile).
	ops.reset()
	l := lock(run + "/0")
	sent = ops.snapshot()
	l.Unlock(ctx)
	gone := sent["multi"] == 2 && sent["createContainer"] == 1
	if !(sent["multi"] == 1 && sent["createContainer"] == 0 || gone) || sent["getChildren2"] != 0 {
		t.Errorf("a known name's grant sent %v, want one multi", sent)
	}
}

// TestAloneNeedsTheQueueEmpty: a create into a queue that has a node
// (another session's) is not granted on its reply, but waits.
func TestAloneNeedsTheQueueEmpty(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx := context.Background()
	a, err := Dial(ctx, servers, &Options{Prefix: testRoot})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Dial(ctx, servers, &Options{Prefix: testRoot})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	name := "alone/" + newGUID()[:8]
	for round := range 2 { // the parent new to b, then known to it
		held, err := a.Mutex(name).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		l, err := b.Mutex(name).Lock(wctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("round %d: b's Lock while a holds: %v, %v; want it to wait", round, l, err)
		}
		if err := held.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		l, err = b.Mutex(name).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.Token() <= held.Token() {
			t.Errorf("round %d: token %d after %d", round, l.Token(), held.Token())
		}
		l.Unlock(ctx)
	}
}

func TestParentCacheBounded(t *testing.T) {
	var p parentCache
	for i := range parentsKept + 10 {
		p.saw(fmt.Sprint(i), parentFacts{})
	}
	if len(p.m) != parentsKept {
		t.Errorf("%d parents kept, want %d", len(p.m), parentsKept)
	}
	for range 10 {
		p.wasMissing(true)
	}
	if !p.guessMissing(false) || p.guessMissing(true) {
		t.Error("after missing parents: an unseen one is not guessed missing, or a known one is")
	}
	for range missingClamp + 1 {
		p.wasMissing(false)
	}
	if p.guessMissing(false) {
		t.Error("after parents found there, an unseen one is still guessed missing")
	}
}

// TestShortWaitProvenByCreate: a waiter granted soon after its create
// (less than timeout/4) takes the create as the grant's proof and sends no
// check of its node; one that waited longer sends one (createProof).
func TestShortWaitProvenByCreate(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx := context.Background()
	const ttl = 4 * time.Second // reportLag 1 s
	var checks atomic.Int64
	count := func() { checks.Add(1) }
	checkGate.Store(&count)
	defer checkGate.Store(nil)
	admin := testAdmin(t, servers)
	for _, tc := range []struct {
		hold       time.Duration
		wantChecks bool
	}{{50 * time.Millisecond, false}, {1500 * time.Millisecond, true}} {
		a, err := Dial(ctx, servers, &Options{Prefix: testRoot}, dlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		b, err := Dial(ctx, servers, &Options{Prefix: testRoot}, dlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		name := "short-wait/" + newGUID()[:8]
		held, err := a.Mutex(name).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checks.Store(0)
		got := make(chan *dlock.Lease, 1)
		go func() {
			l, err := b.Mutex(name).Lock(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		// b is queued once the parent has two children.
		parent := testRoot + "/" + encodeName(name)
		for {
			kids, _, w, err := admin.ChildrenW(parent)
			if err != nil {
				t.Fatal(err)
			}
			if len(kids) == 2 {
				break
			}
			<-w
		}
		time.Sleep(tc.hold) // how long b waits: the measure, not a synchronisation
		unlocked := time.Now()
		if err := held.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		l := <-got
		if l == nil {
			t.FailNow()
		}
		if l.Token() <= held.Token() {
			t.Errorf("hold %v: token %d after %d", tc.hold, l.Token(), held.Token())
		}
		if dl, ok := l.Context().Deadline(); ok && !dl.After(unlocked) {
			t.Errorf("hold %v: granted with its deadline %v already past", tc.hold, time.Until(dl))
		}
		if n := checks.Load(); (n > 0) != tc.wantChecks {
			t.Errorf("hold %v: %d checks of the waiter's node sent, want some: %v", tc.hold, n, tc.wantChecks)
		}
		l.Unlock(ctx)
		a.Close()
		b.Close()
	}
}
