package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// txnCount counts a client's Txn requests.
type txnCount struct{ n atomic.Int64 }

func (c *txnCount) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == "/etcdserverpb.KV/Txn" {
		c.n.Add(1)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// holdMany takes n distinct locks under a fresh prefix on c.
func holdMany(t *testing.T, ctx context.Context, c *dlock.Client, n int) []*dlock.Lease {
	t.Helper()
	prefix := benchName(t)
	leases := make([]*dlock.Lease, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range leases {
		wg.Go(func() { leases[i], errs[i] = c.Mutex(fmt.Sprintf("%s/%d", prefix, i)).TryLock(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return leases
}

// TestRenewalsBatched: a client holding many locks spends a few
// transactions per renewal interval on them, not one per lock: the owner
// checks of the renewals in flight together go in shared transactions.
func TestRenewalsBatched(t *testing.T) {
	const n = 300
	var txns txnCount
	cli := newClient(t, testserver.Etcd(t), grpc.WithChainUnaryInterceptor(txns.unary))
	const ttl = 2 * time.Second // renewed every 667 ms
	c := newLockClient(t, cli, dlock.WithTTL(ttl))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leases := holdMany(t, ctx, c, n)

	before := txns.n.Load()
	const window = 2 * time.Second // three renewal intervals
	time.Sleep(window)             // the thing measured: requests while holding
	spent := txns.n.Load() - before
	perLockInterval := float64(spent) / n / 3
	t.Logf("%d locks held for %v: %d Txns (%.3f per lock per renewal interval)", n, window, spent, perLockInterval)
	if perLockInterval > 0.1 {
		t.Errorf("renewals cost %.3f Txns per lock per interval, want at most 0.1 (batched owner checks)", perLockInterval)
	}
	for _, l := range leases {
		if err := l.Err(); err != nil {
			t.Fatalf("%s: %v", l.Name(), err)
		}
	}
	releaseAll(t, ctx, leases)
}

// TestReleasesBatched: many locks released at once cost a few
// transactions, not one each, and are released for real.
func TestReleasesBatched(t *testing.T) {
	const n = 300
	var txns txnCount
	eps := testserver.Etcd(t)
	cli := newClient(t, eps, grpc.WithChainUnaryInterceptor(txns.unary))
	c := newLockClient(t, cli, dlock.WithTTL(longTTL))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leases := holdMany(t, ctx, c, n)
	before := txns.n.Load()
	releaseAll(t, ctx, leases)
	spent := txns.n.Load() - before
	t.Logf("%d locks released at once: %d Txns", n, spent)
	if spent > n/10 {
		t.Errorf("releasing %d locks at once cost %d Txns, want at most %d", n, spent, n/10)
	}
	other := newLockClient(t, newClient(t, eps), dlock.WithTTL(longTTL))
	for _, l := range leases {
		o, err := other.Mutex(l.Name()).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock(%q) after its release: %v", l.Name(), err)
		}
		unlock(t, o)
	}
}

func releaseAll(t *testing.T, ctx context.Context, leases []*dlock.Lease) {
	t.Helper()
	errs := make([]error, len(leases))
	var wg sync.WaitGroup
	for i, l := range leases {
		wg.Go(func() { errs[i] = l.Unlock(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func unlock(t *testing.T, l *dlock.Lease) {
	t.Helper()
	if err := l.Unlock(context.Background()); err != nil {
		t.Errorf("Unlock(%q): %v", l.Name(), err)
	}
}

// testLossAcrossWatchOutage: keys of held locks deleted while the client's
// watch stream is down (and, with compact, the history compacted away, so
// the watch cannot resume) are reported lost once it is back, those only.
func testLossAcrossWatchOutage(t *testing.T, eps []string, compact bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := newClient(t, eps)
	co := newConn(t, eps)
	c := newLockClient(t, co.cli, dlock.WithTTL(longTTL))
	leases := holdMany(t, ctx, c, 5)
	<-c.Driver().(*Driver).watched

	undo, err := co.fault("watch", drivertest.Fault{Down: true})
	if err != nil {
		t.Fatal(err)
	}
	defer undo()
	victims := []int{1, 3}
	for _, i := range victims {
		pfx := (&Driver{root: "dlocktest/"}).namePrefix(leases[i].Name())
		if _, err := admin.Delete(ctx, pfx, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	}
	if compact {
		resp, err := admin.Get(ctx, "compact-marker")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	healed := time.Now()
	undo()
	for _, i := range victims {
		select {
		case <-leases[i].Done():
			if !errors.Is(leases[i].Err(), dlock.ErrLockLost) {
				t.Errorf("lease %d ended with %v, want ErrLockLost", i, leases[i].Err())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("lease %d still held 20 s after the heal, its key deleted", i)
		}
	}
	t.Logf("losses reported %v after the heal", time.Since(healed))
	for i, l := range leases {
		if i != 1 && i != 3 {
			if err := l.Err(); err != nil {
				t.Errorf("lease %d: %v, want it held", i, err)
			}
			unlock(t, l)
		}
	}
}

func TestLossAcrossWatchOutage(t *testing.T) {
	testLossAcrossWatchOutage(t, testserver.Etcd(t), false)
}

// TestLossAcrossCompaction runs on a cluster of its own: compacting the
// shared one would fail other tests' watches.
func TestLossAcrossCompaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd server")
	}
	procs := testserver.StartEtcdCluster(t, 1)
	testLossAcrossWatchOutage(t, []string{procs[0].Addr()}, true)
}
