package etcdlock

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestMemberCutOff: the holder's only member is cut off from the other
// members (a partition between servers), while the holder keeps its
// connection to it. A waiter connected on the other side is granted the
// lock once the holder's lease expires there; the holder's Done must have
// closed by then.
//
// This is the question zklock had to answer with a transaction (see
// zklock/quorum.go): etcd's renewal is a lease keep-alive, which a
// follower forwards to the leader and a cut-off leader stops granting once
// it steps down (CheckQuorum), plus a check of the key, a linearizable read
// the leader confirms with a quorum (ReadIndex; it was a compare-only Txn,
// which etcd serves from the member's own state: TestRenewAfterLeaderCut).
// This test was green before that fix too: a follower cannot renew without
// the leader, and a new leader extends every lease when it takes over.
func TestMemberCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a cluster of its own")
	}
	nw := testserver.NewNetwork(t)
	procs := testserver.StartEtcdCluster(t, 3, testserver.OnNetwork(nw))
	cases := []struct {
		name           string
		holder, waiter string // the member each is pinned to; the holder's is cut off
	}{
		{"follower-cut/waiter-on-leader", "follower", "leader"},
		{"follower-cut/waiter-on-other-follower", "follower", "other follower"},
		{"leader-cut/waiter-on-follower", "leader", "follower"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testserver.WaitEtcdHealthy(t, procs...)
			roles := etcdRoles(t, procs)
			hs, ws := roles[tc.holder], roles[tc.waiter]
			const ttl = 2 * time.Second // the cluster's smallest lease TTL
			hc, err := New(newClient(t, []string{hs.Addr()}), nil, dlock.WithTTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			defer hc.Close()
			wc, err := New(newClient(t, []string{ws.Addr()}), nil, dlock.WithTTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			defer wc.Close()
			admin := newClient(t, []string{ws.Addr()})
			name := benchName(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			held, err := hc.Mutex(name).Lock(ctx)
			if err != nil {
				t.Fatalf("holder Lock: %v", err)
			}
			got := make(chan *dlock.Lease, 1)
			go func() {
				l, err := wc.Mutex(name).Lock(ctx)
				if err != nil {
					t.Errorf("waiter Lock: %v", err)
				}
				got <- l
			}()
			pfx := (&Driver{root: DefaultPrefix + "/"}).namePrefix(name)
			for {
				r, err := admin.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil {
					t.Fatal(err)
				}
				if r.Count == 2 {
					break
				}
				time.Sleep(5 * time.Millisecond) // no event tells us the waiter has queued
			}
			cut := time.Now()
			doneAt := make(chan time.Duration, 1)
			go func() { <-held.Done(); doneAt <- time.Since(cut) }()
			nw.Isolate(hs)
			t.Logf("cut %s (%s) off from the other members; holder on it, waiter on %s (%s)", hs.Name(), tc.holder, ws.Name(), tc.waiter)

			l := <-got
			if l == nil {
				t.FailNow()
			}
			granted := time.Since(cut)
			select {
			case <-held.Done():
			default:
				t.Errorf("the waiter was granted the lock %v after the cut (token %d after %d) while the holder's Done was still open",
					granted.Round(time.Millisecond), l.Token(), held.Token())
			}
			select {
			case d := <-doneAt:
				t.Logf("holder's Done closed %v after the cut; waiter granted %v after the cut",
					d.Round(time.Millisecond), granted.Round(time.Millisecond))
			case <-time.After(30 * time.Second):
				t.Errorf("the holder's Done still open 30 s after the cut")
			}
			if err := l.Unlock(ctx); err != nil {
				t.Errorf("waiter Unlock: %v", err)
			}
			nw.Heal(hs)
		})
	}
}

// etcdRoles names the members: "leader", "follower" and "other follower".
func etcdRoles(t *testing.T, procs []*testserver.Proc) map[string]*testserver.Proc {
	t.Helper()
	roles := map[string]*testserver.Proc{}
	for _, p := range procs {
		cli := newClient(t, []string{p.Addr()})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, p.Addr())
		cancel()
		if err != nil {
			t.Fatalf("status of %s: %v", p.Name(), err)
		}
		switch {
		case st.Leader == st.Header.MemberId:
			roles["leader"] = p
		case roles["follower"] == nil:
			roles["follower"] = p
		default:
			roles["other follower"] = p
		}
	}
	if len(roles) != 3 {
		names := []string{}
		for r := range roles {
			names = append(names, r)
		}
		t.Fatalf("want a leader and two followers, got %s", strings.Join(names, ", "))
	}
	return roles
}

// TestRenewAfterLeaderCut: once the holder's member (the leader) is cut off
// from the others, no renewal sent after the cut succeeds. The keep-alive
// alone does not ensure it: a cut-off leader goes on granting keep-alives
// until it steps down (up to about two election timeouts), so the
// renewal's check of the key must be a read the quorum confirms.
func TestRenewAfterLeaderCut(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts a cluster of its own")
	}
	nw := testserver.NewNetwork(t)
	procs := testserver.StartEtcdCluster(t, 3, testserver.OnNetwork(nw))
	leader := etcdRoles(t, procs)["leader"]
	d, err := NewDriver(newClient(t, []string{leader.Addr()}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, _, err := d.Acquire(ctx, driver.Request{Name: benchName(t), TTL: 2 * time.Second})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, err := l.Renew(ctx); err != nil {
		t.Fatalf("Renew before the cut: %v", err)
	}
	nw.Isolate(leader)
	cut := time.Now()
	defer nw.Heal(leader)
	var ok int
	var last time.Duration
	for time.Since(cut) < 3*time.Second {
		sent := time.Now()
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := l.Renew(rctx)
		rcancel()
		if err == nil {
			ok, last = ok+1, sent.Sub(cut)
		}
		time.Sleep(50 * time.Millisecond) // the pace of the probes, not a synchronisation
	}
	if ok > 0 {
		t.Errorf("%d renewals sent after the cut succeeded, the last one sent %v after it", ok, last.Round(time.Millisecond))
	}
}
