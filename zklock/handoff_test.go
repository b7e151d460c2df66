package zklock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

type acquired struct {
	l   driver.Lock
	err error
}

func acquireAsync(ctx context.Context, d *Driver, name string) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: testSession, Wait: true})
		ch <- acquired{l, err}
	}()
	return ch
}

// awaitQueue waits, on the admin's child watch, until name's queue has n
// nodes, and returns it.
func awaitQueue(t *testing.T, admin *zk.Conn, name string, n int) []entry {
	t.Helper()
	parent := testRoot + "/" + encodeName(name)
	for {
		kids, _, w, err := admin.ChildrenW(parent)
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Fatalf("watch queue: %v", err)
		}
		if q := queue(kids); len(q) >= n {
			return q
		}
		if errors.Is(err, zk.ErrNoNode) {
			_, _, w, err = admin.ExistsW(parent)
			if err != nil {
				t.Fatalf("watch parent: %v", err)
			}
		}
		select {
		case <-w:
		case <-time.After(10 * time.Second):
			t.Fatalf("queue of %q never reached %d nodes", name, n)
		}
	}
}

func lockOf(t *testing.T, ctx context.Context, d *Driver, name string) driver.Lock {
	t.Helper()
	l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: testSession, Wait: true})
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return l
}

// TestHandoffWithoutRead: a waiter whose only predecessor goes takes the
// lock without reading the queue, with its own node's czxid as token.
func TestHandoffWithoutRead(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	_, da, _ := testClient(t, servers, testSession)
	_, db, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	name := uniqueName(t)

	la := lockOf(t, ctx, da, name)
	got := acquireAsync(ctx, db, name)
	q := awaitQueue(t, admin, name, 2)
	before := readlessGrants.Load()
	if err := la.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	t.Cleanup(func() { r.l.Release(ctx) })
	if n := readlessGrants.Load() - before; n != 1 {
		t.Errorf("grants without a read = %d, want 1", n)
	}
	_, st, err := admin.Exists(testRoot + "/" + encodeName(name) + "/" + q[1].name)
	if err != nil {
		t.Fatal(err)
	}
	if r.l.Token() != uint64(st.Czxid) || r.l.Token() <= la.Token() {
		t.Errorf("token = %d, want the waiter node's czxid %d (> %d)", r.l.Token(), st.Czxid, la.Token())
	}
}

// TestHandoffPredecessorNotAlone: the third in line whose predecessor is
// deleted while the holder still holds does not take the lock.
func TestHandoffPredecessorNotAlone(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	_, da, _ := testClient(t, servers, testSession)
	_, db, _ := testClient(t, servers, testSession)
	_, dc, _ := testClient(t, servers, testSession)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	name := uniqueName(t)

	la := lockOf(t, ctx, da, name)
	gotB := acquireAsync(ctx, db, name)
	awaitQueue(t, admin, name, 2)
	gotC := acquireAsync(ctx, dc, name)
	q := awaitQueue(t, admin, name, 3)
	if err := admin.Delete(testRoot+"/"+encodeName(name)+"/"+q[1].name, -1); err != nil {
		t.Fatalf("delete the middle node: %v", err)
	}
	if r := <-gotB; r.err == nil {
		r.l.Release(ctx)
		t.Fatal("the waiter whose node was deleted got the lock")
	}
	// Nothing announces "C went back to waiting": give a wrong grant time
	// to show.
	select {
	case r := <-gotC:
		if r.err == nil {
			r.l.Release(ctx)
		}
		t.Fatalf("third waiter returned while the holder holds (err %v)", r.err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := la.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	r := <-gotC
	if r.err != nil {
		t.Fatalf("third waiter: %v", r.err)
	}
	r.l.Release(ctx)
}

// TestHandoffOwnNodeGoneFirst: our node and our sole predecessor deleted
// in one transaction (ours first): the predecessor's deletion is no grant.
func TestHandoffOwnNodeGoneFirst(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	_, da, _ := testClient(t, servers, testSession)
	_, db, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	for i := range 10 {
		name := uniqueName(t)
		la := lockOf(t, ctx, da, name)
		got := acquireAsync(ctx, db, name)
		q := awaitQueue(t, admin, name, 2)
		parent := testRoot + "/" + encodeName(name)
		if _, err := admin.Multi(
			&zk.DeleteRequest{Path: parent + "/" + q[1].name, Version: -1},
			&zk.DeleteRequest{Path: parent + "/" + q[0].name, Version: -1},
		); err != nil {
			t.Fatalf("delete both: %v", err)
		}
		if r := <-got; r.err == nil {
			r.l.Release(ctx)
			t.Fatalf("round %d: granted although our node was deleted first", i)
		}
		la.Release(ctx)
	}
}

// TestHandoffDownTheQueue: four in line (A holds; B, C, D wait). Each
// waiter two or more behind the holder watches the node two ahead of it, so
// it reads the queue while that node's successor holds, and takes the lock
// on the successor's deletion with no read: every one of the three
// handoffs is readless, where, watching only the node just ahead, only B's
// was (C and D read the queue after their predecessor's deletion, on the
// handoff's path). Each release wakes at most two waiters.
func TestHandoffDownTheQueue(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	name := uniqueName(t)
	parent := testRoot + "/" + encodeName(name)
	ds := make([]*Driver, 4)
	for i := range ds {
		_, ds[i], _ = testClient(t, servers, testSession)
	}
	// Each waiter's wait, in order: whether it waits for a last blocker.
	waits := make(chan bool, 16)
	gate := func(p string, last bool) {
		if p == parent {
			waits <- last
		}
	}
	waitingGate.Store(&gate)
	t.Cleanup(func() { waitingGate.Store(nil) })
	nextWait := func(what string) bool {
		t.Helper()
		select {
		case last := <-waits:
			return last
		case <-time.After(10 * time.Second):
			t.Fatalf("no waiter waited: %s", what)
			return false
		}
	}

	la := lockOf(t, ctx, ds[0], name)
	got := make([]<-chan acquired, 4)
	for i := 1; i < 4; i++ {
		got[i] = acquireAsync(ctx, ds[i], name)
		awaitQueue(t, admin, name, i+1)
		want := i == 1 // B waits on A alone; C and D two ahead
		if last := nextWait("waiter joining"); last != want {
			t.Fatalf("waiter %d in line: last = %v, want %v", i, last, want)
		}
	}
	before := readlessGrants.Load()
	held := la
	for i := 1; i < 4; i++ {
		if err := held.Release(ctx); err != nil {
			t.Fatalf("release: %v", err)
		}
		r := <-got[i]
		if r.err != nil {
			t.Fatalf("waiter %d: %v", i, r.err)
		}
		if r.l.Token() <= held.Token() {
			t.Errorf("token %d after %d: not increasing", r.l.Token(), held.Token())
		}
		held = r.l
		if i < 3 {
			// The next in line read the queue on the release and waits
			// for the new holder alone.
			if last := nextWait("the next in line after a release"); !last {
				t.Fatalf("after grant %d, the next waits with last = false", i)
			}
		}
	}
	if err := held.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if n := readlessGrants.Load() - before; n != 3 {
		t.Errorf("grants without a read = %d of 3", n)
	}
	select {
	case last := <-waits:
		t.Errorf("a waiter waited again (last %v): a release woke more than the two behind it", last)
	default:
	}
}
