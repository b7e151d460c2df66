package zklock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// testClient opens a client through its own proxies, closed at cleanup.
func testClient(t *testing.T, servers []string, session time.Duration, opts ...dlock.Option) (*dlock.Client, *Driver, *link) {
	t.Helper()
	k := testLink(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := dialDriver(ctx, k.addrs(), Options{Prefix: testRoot, SessionTimeout: session, Dialer: k.dial}, false)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c, err := dlock.NewClient(d, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, d, k
}

// testLink starts a fault proxy per server, closed at cleanup.
func testLink(t *testing.T, servers []string) *link {
	t.Helper()
	k, err := newLink(servers)
	if err != nil {
		t.Fatalf("fault proxies: %v", err)
	}
	t.Cleanup(k.close)
	return k
}

func testAdmin(t *testing.T, servers []string) *zk.Conn {
	t.Helper()
	c, err := adminConn(servers)
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func uniqueName(t *testing.T) string { return "zkfault/" + t.Name() + "/" + newGUID()[:8] }

func queueOf(t *testing.T, admin *zk.Conn, name string) []entry {
	t.Helper()
	parent := testRoot + "/" + encodeName(name)
	// The admin's server may be a follower that has not yet applied what
	// the drivers' servers did (a waiter's cleanup): sync it first, so that
	// the read sees every write acknowledged before it.
	if _, err := admin.Sync(parent); err != nil && !errors.Is(err, zk.ErrNoNode) {
		t.Fatalf("sync queue of %q: %v", name, err)
	}
	kids, _, err := admin.Children(parent)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		t.Fatalf("list queue of %q: %v", name, err)
	}
	return queue(kids)
}

// TestServerStopped: one of three servers (the leader) stops while locks
// are held and waited for. No two holders at once, tokens keep rising, and
// every increment is done.
func TestServerStopped(t *testing.T) {
	procs := testserver.StartZooKeeper(t, 3)
	var servers []string
	for _, p := range procs {
		servers = append(servers, p.Addr())
	}
	// Long enough to ride out a leader election, as in production.
	const session = 8 * time.Second
	const workers, each = 4, 30
	name := uniqueName(t)

	var (
		mu        sync.Mutex
		current   *dlock.Lease
		lastToken uint64
		counter   int
		grants    atomic.Int32
		lockErrs  atomic.Int32
		unlockErr atomic.Int32
		halfway   = make(chan struct{})
		halfOnce  sync.Once
		wg        sync.WaitGroup
	)
	fail := make(chan string, workers*each)
	for w := range workers {
		c, _, _ := testClient(t, servers, session)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := c.Mutex(name)
			for done := 0; done < each; {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				l, err := m.Lock(ctx)
				cancel()
				if err != nil {
					if lockErrs.Add(1) > 50 {
						fail <- fmt.Sprintf("worker %d: too many Lock errors, last: %v", w, err)
						return
					}
					t.Logf("worker %d: Lock: %v (retrying)", w, err)
					continue // the ensemble is electing: try again
				}
				mu.Lock()
				if current != nil {
					select {
					case <-current.Done():
					default:
						fail <- fmt.Sprintf("token %d granted while token %d still held", l.Token(), current.Token())
					}
				}
				if l.Token() <= lastToken {
					fail <- fmt.Sprintf("token %d after %d", l.Token(), lastToken)
				}
				current, lastToken = l, l.Token()
				select {
				case <-l.Done(): // lost before the increment: do not count it
				default:
					counter++
					done++
				}
				mu.Unlock()
				if grants.Add(1) == workers*each/3 {
					halfOnce.Do(func() { close(halfway) })
				}
				mu.Lock()
				if current == l {
					current = nil // from here the engine may grant the next holder
				}
				mu.Unlock()
				if err := l.Unlock(context.Background()); err != nil {
					unlockErr.Add(1)
					t.Logf("unlock: %v", err)
				}
			}
		}()
	}
	<-halfway
	var leader *testserver.Proc
	for _, p := range procs {
		if testserver.ZooKeeperMode(p.Addr()) == "leader" {
			leader = p
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	start := time.Now()
	leader.Stop()
	t.Logf("stopped leader %s after %d grants", leader.Name(), grants.Load())
	wg.Wait()
	close(fail)
	for f := range fail {
		t.Error(f)
	}
	if counter != workers*each {
		t.Errorf("counter = %d, want %d", counter, workers*each)
	}
	t.Logf("finished %v after the stop; %d Lock errors, %d Unlock errors", time.Since(start), lockErrs.Load(), unlockErr.Load())
}

// TestSessionExpiry: the holder is partitioned for longer than its
// session timeout. Its lease ends before the waiter is granted, its node is
// gone, and after the partition heals its driver knows the session ended.
func TestSessionExpiry(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	const session = 2 * time.Second
	admin := testAdmin(t, servers)
	name := uniqueName(t)
	a, da, pa := testClient(t, servers, session)
	b, _, _ := testClient(t, servers, session)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	ch := make(chan *dlock.Lease, 1)
	go func() {
		lb, err := b.Mutex(name).Lock(ctx)
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
		ch <- lb
	}()
	for len(queueOf(t, admin, name)) < 2 {
		time.Sleep(10 * time.Millisecond) // no event tells us the waiter queued
	}
	aNode := queueOf(t, admin, name)[0].name
	start := time.Now()
	pa.partition(true)
	lb := <-ch
	if lb == nil {
		t.FailNow()
	}
	granted := time.Since(start)
	select {
	case <-la.Done():
	default:
		t.Fatalf("waiter granted %v after the partition while the partitioned holder's lease was still on", granted)
	}
	if !errors.Is(la.Err(), dlock.ErrLockLost) {
		t.Errorf("holder Err = %v, want ErrLockLost", la.Err())
	}
	if lb.Token() <= la.Token() {
		t.Errorf("token %d after %d", lb.Token(), la.Token())
	}
	if q := queueOf(t, admin, name); len(q) != 1 || q[0].name == aNode {
		t.Errorf("queue after expiry = %v, want only the new holder (old node %s)", q, aNode)
	}
	t.Logf("waiter granted %v after the partition (session %v)", granted, session)

	// Healed: the old session is reported expired and its locks stay lost.
	oldSession := da.sessionOf(da.conn.SessionID())
	pa.partition(false)
	select {
	case <-oldSession.lost:
	case <-time.After(3 * session):
		t.Fatalf("the driver did not learn that its session expired after the partition healed")
	}
	if err := la.Unlock(ctx); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Unlock after expiry = %v, want ErrLockLost", err)
	}
	if l, err := a.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryLock on the new session while held = %v, %v; want ErrNotAcquired", l, err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	la2, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock on the new session: %v", err)
	}
	if err := la2.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestCreateReplyLost: the connection drops after a create went out and
// before its reply was read. The driver finds its node by its guid: no
// orphan remains and the queue moves on.
func TestCreateReplyLost(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	const session = 4 * time.Second
	admin := testAdmin(t, servers)
	name := uniqueName(t)
	a, _, _ := testClient(t, servers, session)
	b, _, pb := testClient(t, servers, session)
	c, _, _ := testClient(t, servers, session)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	before := recovered.Load()
	pb.mu.Lock()
	pb.dropOnReply = true
	pb.mu.Unlock()
	chB := make(chan *dlock.Lease, 1)
	go func() {
		l, err := b.Mutex(name).Lock(ctx)
		if err != nil {
			t.Errorf("Lock after a lost create reply: %v", err)
		}
		chB <- l
	}()
	for len(queueOf(t, admin, name)) < 2 {
		time.Sleep(10 * time.Millisecond) // no event tells us the waiter queued
	}
	chC := make(chan *dlock.Lease, 1)
	go func() {
		l, err := c.Mutex(name).Lock(ctx)
		if err != nil {
			t.Errorf("third Lock: %v", err)
		}
		chC <- l
	}()
	for len(queueOf(t, admin, name)) < 3 {
		time.Sleep(10 * time.Millisecond)
	}
	if q := queueOf(t, admin, name); len(q) != 3 {
		t.Errorf("queue = %v: want holder and two waiters, no orphan", q)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	lb := <-chB
	if lb == nil {
		t.FailNow()
	}
	if got := recovered.Load() - before; got != 1 {
		t.Logf("creates recovered by guid: %d (the dropped read may have preceded the create's reply)", got)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	lc := <-chC
	if lc == nil {
		t.FailNow()
	}
	if err := lc.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if q := queueOf(t, admin, name); len(q) != 0 {
		t.Errorf("nodes left after every holder unlocked: %v", q)
	}
}
