package zklock

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestServerCutOff: the holder's only server is cut off from the other
// servers of the ensemble (a partition between servers), while the holder
// keeps its connection to it. A waiter connected on the other side is
// granted the lock once the holder's session expires there; the holder's
// Done must have closed by then. The same for a reader's lease (the waiter
// a writer) and a semaphore's permit, whose grants and renewals go through
// the same proof at the leader. In the +leader-restart cases the leader is
// stopped for a second during the cut: the other two servers elect a new
// leader, which starts every session's timeout afresh, the cut-off
// holder's too; for every kind of lease, an election's included.
//
// A cut-off follower goes on answering reads (and its client's pings) on
// its own for up to syncLimit x tickTime (2.5 s here), and a cut-off leader
// for as long before it notices it has lost its quorum: a renewal that is a
// read answered there proves nothing about the session at the quorum.
func TestServerCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts an ensemble of its own")
	}
	nw := testserver.NewNetwork(t)
	procs := testserver.StartZooKeeper(t, 3, testserver.OnNetwork(nw))
	type take func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error)
	var (
		lock take = func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.Mutex(name).Lock
		}
		rlock take = func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.RWMutex(name).RLock
		}
		permit take = func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.Semaphore(name, 2).Acquire
		}
		campaign take = func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return func(ctx context.Context) (*dlock.Lease, error) {
				l, err := c.Election(name).Campaign(ctx, "v")
				if err != nil {
					return nil, err
				}
				return l.Lease, nil
			}
		}
	)
	cases := []struct {
		name           string
		holder, waiter string // the server each is pinned to; the holder's is cut off
		hold, wait     take   // the holder's lease and the waiter's
		permits        bool   // a semaphore of 2: the waiter's client holds the other permit
		restart        bool   // the leader is stopped for a second during the cut
	}{
		{"follower-cut/waiter-on-leader", "follower", "leader", lock, lock, false, false},
		{"follower-cut/waiter-on-other-follower", "follower", "other follower", lock, lock, false, false},
		{"leader-cut/waiter-on-follower", "leader", "follower", lock, lock, false, false},
		{"reader/follower-cut/writer-on-leader", "follower", "leader", rlock, lock, false, false},
		{"permit/follower-cut/waiter-on-leader", "follower", "leader", permit, permit, true, false},
		{"follower-cut+leader-restart/waiter-on-other-follower", "follower", "other follower", lock, lock, false, true},
		{"reader/follower-cut+leader-restart/writer-on-other-follower", "follower", "other follower", rlock, lock, false, true},
		{"permit/follower-cut+leader-restart/waiter-on-other-follower", "follower", "other follower", permit, permit, true, true},
		{"election/follower-cut+leader-restart/candidate-on-other-follower", "follower", "other follower", campaign, campaign, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testserver.WaitZooKeeperServing(t, procs...)
			roles := zkRoles(t, procs)
			hs, ws := roles[tc.holder], roles[tc.waiter]
			// The holder's session is short, as in the safety suite; the
			// waiter's rides out the election of a new leader.
			const holderSession, waiterSession = 2 * time.Second, 8 * time.Second
			hc, _, _ := testClient(t, []string{hs.Addr()}, holderSession)
			wc, _, _ := testClient(t, []string{ws.Addr()}, waiterSession)
			admin := testAdmin(t, []string{ws.Addr()})
			name := uniqueName(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			held, err := tc.hold(hc, name)(ctx)
			if err != nil {
				t.Fatalf("holder Lock: %v", err)
			}
			queued := 2
			if tc.permits {
				// The other permit, held on the waiter's side throughout.
				other, err := tc.hold(wc, name)(ctx)
				if err != nil {
					t.Fatalf("second permit: %v", err)
				}
				defer other.Unlock(ctx)
				queued = 3
			}
			got := make(chan *dlock.Lease, 1)
			go func() {
				l, err := tc.wait(wc, name)(ctx)
				if err != nil {
					t.Errorf("waiter Lock: %v", err)
				}
				got <- l
			}()
			for len(queueOf(t, admin, name)) < queued {
				time.Sleep(10 * time.Millisecond) // no event says the waiter has queued
			}
			cut := time.Now()
			doneAt := make(chan time.Duration, 1)
			go func() { <-held.Done(); doneAt <- time.Since(cut) }()
			nw.Isolate(hs)
			t.Logf("cut %s (%s) off from the other servers; holder on it, waiter on %s (%s)", hs.Name(), tc.holder, ws.Name(), tc.waiter)
			if tc.restart {
				leader := roles["leader"]
				leader.Stop()
				time.Sleep(time.Second) // the fault schedule
				leader.Start()
				t.Logf("restarted %s (leader) %v after the cut", leader.Name(), time.Since(cut).Round(time.Millisecond))
			}

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

// zkRoles names the servers: "leader", "follower" and "other follower".
func zkRoles(t *testing.T, procs []*testserver.Proc) map[string]*testserver.Proc {
	t.Helper()
	// A server that has just been healed (or restarted) serves clients as
	// soon as it has synced, but may answer "srvr" without a mode for a
	// moment while it rejoins: ask until every server has a role. No event
	// says the ensemble is whole again.
	deadline := time.Now().Add(time.Minute)
	for {
		roles := map[string]*testserver.Proc{}
		for _, p := range procs {
			switch testserver.ZooKeeperMode(p.Addr()) {
			case "leader":
				roles["leader"] = p
			case "follower":
				if roles["follower"] == nil {
					roles["follower"] = p
				} else {
					roles["other follower"] = p
				}
			}
		}
		if len(roles) == 3 && roles["leader"] != nil {
			return roles
		}
		if time.Now().After(deadline) {
			t.Fatalf("want a leader and two followers within a minute, got %v", roles)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServerCutOffRightAfter: the holder's follower is cut off right after
// the leader has seen a renewal, or a grant, of the holder's session. A
// follower tells the leader of its sessions' activity only in its replies
// to the leader's pings (every tickTime/2), so the leader's last news of
// the session may be older than that renewal or grant; the lease must
// count from news the leader has had (quorum.go). Each round pins the
// holder to a follower and the waiter to the leader.
func TestServerCutOffRightAfter(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts an ensemble of its own")
	}
	nw := testserver.NewNetwork(t)
	procs := testserver.StartZooKeeper(t, 3, testserver.OnNetwork(nw))
	const rounds = 4
	const holderSession, waiterSession = 2 * time.Second, 8 * time.Second

	// round runs one cut: hold(hc) returns the holder's lease once the
	// moment to cut has come.
	round := func(t *testing.T, hold func(ctx context.Context, name string, hc *dlock.Client, hd *renewSignal) *dlock.Lease) {
		testserver.WaitZooKeeperServing(t, procs...)
		roles := zkRoles(t, procs)
		hs, ws := roles["follower"], roles["leader"]
		_, d, _ := testClient(t, []string{hs.Addr()}, holderSession)
		hd := &renewSignal{Driver: d, renewed: make(chan struct{}, 1)}
		hc, err := dlock.NewClient(hd)
		if err != nil {
			t.Fatal(err)
		}
		defer hc.Close()
		wc, _, _ := testClient(t, []string{ws.Addr()}, waiterSession)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		name := uniqueName(t)

		held := hold(ctx, name, hc, hd)
		cut := time.Now()
		nw.Isolate(hs)
		defer nw.Heal(hs)
		doneAt := make(chan time.Duration, 1)
		go func() { <-held.Done(); doneAt <- time.Since(cut) }()
		l, err := wc.Mutex(name).Lock(ctx)
		if err != nil {
			t.Fatalf("waiter Lock: %v", err)
		}
		granted := time.Since(cut)
		select {
		case <-held.Done():
		default:
			t.Errorf("the waiter was granted the lock %v after the cut while the holder's Done was still open", granted.Round(time.Millisecond))
		}
		select {
		case d := <-doneAt:
			t.Logf("holder's Done closed %v after the cut; waiter granted %v after the cut", d.Round(time.Millisecond), granted.Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Errorf("the holder's Done still open 30 s after the cut")
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("waiter Unlock: %v", err)
		}
	}

	t.Run("renewal", func(t *testing.T) {
		for range rounds {
			round(t, func(ctx context.Context, name string, hc *dlock.Client, hd *renewSignal) *dlock.Lease {
				held, err := hc.Mutex(name).Lock(ctx)
				if err != nil {
					t.Fatalf("holder Lock: %v", err)
				}
				// The second renewal, when the lease is in its steady state.
				for range 2 {
					select {
					case <-hd.renewed:
					case <-ctx.Done():
						t.Fatal("no renewal")
					}
				}
				return held
			})
		}
	})
	t.Run("grant-on-quiet-session", func(t *testing.T) {
		for range rounds {
			round(t, func(ctx context.Context, name string, hc *dlock.Client, _ *renewSignal) *dlock.Lease {
				// Only go-zookeeper's pings (every timeout/3) for a while.
				time.Sleep(600 * time.Millisecond)
				held, err := hc.Mutex(name).Lock(ctx)
				if err != nil {
					t.Fatalf("holder Lock: %v", err)
				}
				return held
			})
		}
	})
}

// renewSignal is the driver with a signal after each successful renewal.
type renewSignal struct {
	*Driver
	renewed chan struct{}
}

func (d *renewSignal) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	l, v, err := d.Driver.Acquire(ctx, req)
	if err != nil {
		return l, v, err
	}
	return &renewSignalLock{Lock: l, d: d}, v, nil
}

type renewSignalLock struct {
	driver.Lock
	d *renewSignal
}

func (l *renewSignalLock) Renew(ctx context.Context) (driver.Validity, error) {
	v, err := l.Lock.Renew(ctx)
	if err == nil {
		select {
		case l.d.renewed <- struct{}{}:
		default:
		}
	}
	return v, err
}
