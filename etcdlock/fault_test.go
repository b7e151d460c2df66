package etcdlock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestWaiterLeaseExpires: a waiter whose lease ends while it waits (a
// writer, a reader behind a writer, a permit) returns ErrLockLost instead of
// waiting forever (etcd#19597, etcd#16221), and its key is gone.
func TestWaiterLeaseExpires(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	type acquireFn = func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error)
	mutex := func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
		return c.Mutex(name).Lock
	}
	for _, tc := range []struct {
		kind          string
		holder, waits acquireFn
	}{
		{"Writer", mutex, mutex},
		{"Reader", mutex, func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.RWMutex(name).RLock
		}},
		{"Permit", func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.Semaphore(name, 1).Acquire
		}, func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.Semaphore(name, 1).Acquire
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			name := benchName(t)
			a, err := New(newClient(t, eps), nil, dlock.WithTTL(30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := New(newClient(t, eps), nil, dlock.WithTTL(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			la, err := tc.holder(a, name)(ctx)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				l, err := tc.waits(b, name)(ctx)
				if err == nil {
					l.Unlock(ctx)
				}
				done <- err
			}()
			pfx := (&Driver{root: DefaultPrefix + "/"}).namePrefix(name)
			var waiterKey *clientv3.GetResponse
			for {
				waiterKey, err = admin.Get(ctx, pfx, append(clientv3.WithLastCreate(), clientv3.WithPrefix())...)
				if err != nil {
					t.Fatal(err)
				}
				if waiterKey.Count == 2 {
					break
				}
				time.Sleep(5 * time.Millisecond) // no event tells us the waiter has queued
			}
			// Past its first re-read (once its watch is up), nothing but its
			// own keep-alive, every TTL/3, can tell the waiter: no event says
			// when it is there, so give it the time.
			time.Sleep(500 * time.Millisecond)
			// The lease ends as if its keep-alives had stopped reaching the server.
			revoked := time.Now()
			if _, err := admin.Revoke(ctx, clientv3.LeaseID(waiterKey.Kvs[0].Lease)); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, dlock.ErrLockLost) {
					t.Fatalf("waiter after its lease ended: %v, want ErrLockLost", err)
				}
				took := time.Since(revoked)
				t.Logf("waiter returned %v after its lease ended: %v", took, err)
				if took > 2*time.Second { // it keeps its lease alive every TTL/3
					t.Errorf("waiter returned %v after its lease ended, want within TTL/3 (~0.7 s) and a round trip", took)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("waiter still waiting 10 s after its lease ended")
			}
			r, err := admin.Get(ctx, string(waiterKey.Kvs[0].Key))
			if err != nil || len(r.Kvs) != 0 {
				t.Fatalf("waiter's key still there (%v)", err)
			}
			if err := la.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLeaderFailover: holders renew and waiters wait while the leader
// member is stopped; no two holders at once, tokens keep increasing, and
// grants resume under the new leader.
func TestLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member cluster")
	}
	procs := testserver.StartEtcdCluster(t, 3)
	var eps []string
	for _, p := range procs {
		eps = append(eps, p.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := benchName(t)

	var (
		inside, maxInside atomic.Int32
		grants            atomic.Int64
		mu                sync.Mutex
		last              uint64
		failures          []string
		wg                sync.WaitGroup
	)
	stop := make(chan struct{})
	for range 3 {
		c, err := New(newClient(t, eps), nil, dlock.WithTTL(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := c.Mutex(name)
			for {
				select {
				case <-stop:
					return
				default:
				}
				lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
				l, err := m.Lock(lctx)
				lcancel()
				if err != nil {
					continue // an election in progress: try again
				}
				n := inside.Add(1)
				for old := maxInside.Load(); n > old && !maxInside.CompareAndSwap(old, n); old = maxInside.Load() {
				}
				mu.Lock()
				if l.Token() <= last {
					failures = append(failures, "token went backwards")
				}
				last = l.Token()
				mu.Unlock()
				grants.Add(1)
				select { // hold across renewals some of the time
				case <-time.After(time.Duration(grants.Load()%3) * 700 * time.Millisecond):
				case <-l.Done():
				}
				inside.Add(-1)
				uctx, ucancel := context.WithTimeout(ctx, 10*time.Second)
				l.Unlock(uctx)
				ucancel()
			}
		}()
	}
	waitGrants := func(n int64, what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for grants.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d grants", what, grants.Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitGrants(5, "before failover")

	admin := newClient(t, eps)
	leader := -1
	for i, p := range procs {
		st, err := admin.Status(ctx, p.Addr())
		if err == nil && st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader found")
	}
	before := grants.Load()
	t.Logf("stopping leader %s after %d grants", procs[leader].Name(), before)
	procs[leader].Stop()
	var rest []*testserver.Proc
	for i, p := range procs {
		if i != leader {
			rest = append(rest, p)
		}
	}
	testserver.WaitEtcdHealthy(t, rest...)
	waitGrants(before+5, "after failover")
	close(stop)
	wg.Wait()
	t.Logf("%d grants in all", grants.Load())
	if m := maxInside.Load(); m != 1 {
		t.Errorf("max holders at once = %d", m)
	}
	for _, f := range failures {
		t.Error(f)
	}
}
