package zklock

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestElectionServerCutOff: the leader's only server is cut off from the
// rest of the ensemble while the leader keeps its connection to it. The
// candidate, on the quorum's side, is elected once the leader's session
// expires there; by then the leader's Done must have closed, and so when an
// observer on the quorum's side first sees the new term. The cut-off
// leader's Proclaim fails and is never observed; its Leader either fails or
// reports the new leader, never the old.
func TestElectionServerCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts an ensemble of its own")
	}
	nw := testserver.NewNetwork(t)
	procs := testserver.StartZooKeeper(t, 3, testserver.OnNetwork(nw))
	testserver.WaitZooKeeperServing(t, procs...)
	roles := zkRoles(t, procs)
	hs, ws := roles["follower"], roles["leader"]
	const leaderSession, candidateSession = 2 * time.Second, 8 * time.Second
	hc, _, _ := testClient(t, []string{hs.Addr()}, leaderSession)
	wc, _, _ := testClient(t, []string{ws.Addr()}, candidateSession)
	admin := testAdmin(t, []string{ws.Addr()})
	name := uniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	la, err := hc.Election(name).Campaign(ctx, "a")
	if err != nil {
		t.Fatalf("Campaign a: %v", err)
	}
	obs, err := wc.Election(name).Observe(ctx)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	if got := <-obs; got != (dlock.Leader{Value: "a", Term: la.Term()}) {
		t.Fatalf("observed %+v first, want a's term %d", got, la.Term())
	}
	got := make(chan *dlock.Leadership, 1)
	go func() {
		lb, err := wc.Election(name).Campaign(ctx, "b")
		if err != nil {
			t.Errorf("Campaign b: %v", err)
		}
		got <- lb
	}()
	for len(queueOf(t, admin, name)) < 2 {
		time.Sleep(10 * time.Millisecond) // no event says the candidate has queued
	}
	cut := time.Now()
	doneAt := make(chan time.Duration, 1)
	go func() { <-la.Done(); doneAt <- time.Since(cut) }()
	nw.Isolate(hs)
	defer nw.Heal(hs)
	t.Logf("cut %s (follower) off; leader a on it, candidate b and the observer on %s (leader)", hs.Name(), ws.Name())

	proclaimed := make(chan error, 1)
	go func() {
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		proclaimed <- la.Proclaim(pctx, "zombie")
	}()

	// The observer's first report of another term.
	var seen dlock.Leader
	for seen.Term <= la.Term() {
		select {
		case l, ok := <-obs:
			if !ok {
				t.Fatal("Observe's channel closed")
			}
			if l.Value == "zombie" {
				t.Fatalf("observed the cut-off leader's Proclaim: %+v", l)
			}
			if l.Term != 0 && l.Term < la.Term() {
				t.Fatalf("observed term %d after term %d", l.Term, la.Term())
			}
			seen = l
		case <-time.After(30 * time.Second):
			t.Fatal("no new leader observed within 30 s of the cut")
		}
	}
	observedAt := time.Since(cut)
	select {
	case <-la.Done():
	default:
		t.Errorf("a new leader (%+v) was observed %v after the cut while the old leader's Done was open", seen, observedAt)
	}
	lb := <-got
	if lb == nil {
		t.FailNow()
	}
	electedAt := time.Since(cut)
	select {
	case <-la.Done():
	default:
		t.Errorf("b was elected %v after the cut while a's Done was still open", electedAt)
	}
	if seen != (dlock.Leader{Value: "b", Term: lb.Term()}) {
		t.Errorf("observed %+v, want b's term %d", seen, lb.Term())
	}
	t.Logf("a's Done closed %v, b elected %v, b observed %v after the cut (%v)",
		(<-doneAt).Round(time.Millisecond), electedAt.Round(time.Millisecond), observedAt.Round(time.Millisecond), la.Err())
	if err := <-proclaimed; err == nil {
		t.Errorf("the cut-off leader's Proclaim succeeded")
	} else {
		t.Logf("the cut-off leader's Proclaim: %v", err)
	}
	lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
	defer lcancel()
	if l, err := hc.Election(name).Leader(lctx); err == nil && l.Term == la.Term() {
		t.Errorf("the cut-off client's Leader reports the replaced leader %+v", l)
	}
	if l, err := wc.Election(name).Leader(ctx); err != nil || l != (dlock.Leader{Value: "b", Term: lb.Term()}) {
		t.Errorf("Leader on the quorum's side = %+v, %v; want b's term %d", l, err, lb.Term())
	}
	if err := lb.Resign(ctx); err != nil {
		t.Errorf("Resign b: %v", err)
	}
}

// TestObserveAcrossOutage: an observer whose connection is down while the
// leadership changes reports the latest leader once it is back, on the same
// session (a short outage: go-zookeeper re-arms the watches) and on a new
// one (an outage longer than the session timeout: the session expired with
// its watches, and the observer reads and watches again).
func TestObserveAcrossOutage(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	const session = 2 * time.Second
	for _, tc := range []struct {
		name string
		down time.Duration
	}{
		{"reconnect", session / 4},
		{"expired", 2 * session},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oc, od, ok := testClient(t, servers, session)
			c, _, _ := testClient(t, servers, testSession)
			name := uniqueName(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			obs, err := oc.Election(name).Observe(ctx)
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			if l := <-obs; l != (dlock.Leader{}) {
				t.Fatalf("observed %+v first, want nobody", l)
			}
			la, err := c.Election(name).Campaign(ctx, "a")
			if err != nil {
				t.Fatalf("Campaign a: %v", err)
			}
			awaitLeader(t, obs, dlock.Leader{Value: "a", Term: la.Term()}, 0)
			sid := od.conn.SessionID()

			ok.partition(true)
			if err := la.Proclaim(ctx, "a2"); err != nil {
				t.Fatalf("Proclaim: %v", err)
			}
			if err := la.Resign(ctx); err != nil {
				t.Fatalf("Resign: %v", err)
			}
			lb, err := c.Election(name).Campaign(ctx, "b")
			if err != nil {
				t.Fatalf("Campaign b: %v", err)
			}
			if err := lb.Proclaim(ctx, "b2"); err != nil {
				t.Fatalf("Proclaim: %v", err)
			}
			time.Sleep(tc.down) // the outage's length: no event to wait for
			ok.partition(false)
			awaitLeader(t, obs, dlock.Leader{Value: "b2", Term: lb.Term()}, la.Term())
			if same := od.conn.SessionID() == sid; same != (tc.name == "reconnect") {
				t.Errorf("session %x before the outage, %x after: want the same session only after the short outage", sid, od.conn.SessionID())
			}
			if err := lb.Resign(ctx); err != nil {
				t.Fatalf("Resign: %v", err)
			}
			awaitLeader(t, obs, dlock.Leader{}, lb.Term())
		})
	}
}

// awaitLeader reads obs until it receives want, checking that the terms
// received never fall below floor nor below one received before.
func awaitLeader(t *testing.T, obs <-chan dlock.Leader, want dlock.Leader, floor uint64) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-obs:
			if !ok {
				t.Fatalf("Observe's channel closed while waiting for %+v", want)
			}
			if l.Term != 0 && l.Term < floor {
				t.Fatalf("observed term %d after term %d", l.Term, floor)
			}
			if l == want {
				return
			}
			floor = max(floor, l.Term)
		case <-timeout:
			t.Fatalf("%+v not observed within 20 s", want)
		}
	}
}

// TestHolderNotReadersNorPermits: readers and permits have no leader; a
// mutex's holder is the exclusive holder, without a value; a value is kept
// only with an exclusive lock, and bounded.
func TestHolderNotReadersNorPermits(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	c, d, _ := testClient(t, servers, testSession)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := uniqueName(t)
	leader := func(want dlock.Leader) {
		t.Helper()
		if l, err := c.Election(name).Leader(ctx); err != nil || l != want {
			t.Errorf("Leader = %+v, %v; want %+v", l, err, want)
		}
	}
	leader(dlock.Leader{})
	r, err := c.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	leader(dlock.Leader{})
	unlockOrFail(t, r)
	m, err := c.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	leader(dlock.Leader{Term: m.Token()})
	unlockOrFail(t, m)
	p, err := c.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	leader(dlock.Leader{})
	unlockOrFail(t, p)

	for _, req := range []driver.Request{
		{Name: name, TTL: testSession, Mode: driver.Shared, Value: "v"},
		{Name: name, TTL: testSession, Limit: 2, Value: "v"},
		{Name: name, TTL: testSession, Value: strings.Repeat("v", maxValue+1)},
	} {
		if l, _, err := d.Acquire(ctx, req); !errors.Is(err, driver.ErrInvalidArgument) {
			if l != nil {
				l.Release(ctx)
			}
			t.Errorf("Acquire(mode %v, limit %d, %d-byte value) = %v, want ErrInvalidArgument", req.Mode, req.Limit, len(req.Value), err)
		}
	}
	if _, err := c.Election(name).Campaign(ctx, strings.Repeat("v", maxValue+1)); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Campaign with a value over the bound = %v, want ErrInvalidArgument", err)
	}
	l, err := c.Election(name).Campaign(ctx, "a")
	if err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	if err := l.Proclaim(ctx, strings.Repeat("v", maxValue+1)); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Proclaim with a value over the bound = %v, want ErrInvalidArgument", err)
	}
	leader(dlock.Leader{Value: "a", Term: l.Term()})
	if err := l.Resign(ctx); err != nil {
		t.Errorf("Resign: %v", err)
	}
}

func unlockOrFail(t *testing.T, l *dlock.Lease) {
	t.Helper()
	if err := l.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// TestObserveValueWhileQueueChanges: candidates joining and leaving the
// queue behind the leader do not hide its later Proclaims from an observer
// (the observer keeps the head's data watch across changes of the queue).
func TestObserveValueWhileQueueChanges(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	c, _, _ := testClient(t, servers, testSession)
	oc, _, _ := testClient(t, servers, testSession)
	admin := testAdmin(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := uniqueName(t)
	la, err := c.Election(name).Campaign(ctx, "v0")
	if err != nil {
		t.Fatalf("Campaign: %v", err)
	}
	obs, err := oc.Election(name).Observe(ctx)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	awaitLeader(t, obs, dlock.Leader{Value: "v0", Term: la.Term()}, 0)
	for i := 1; i <= 3; i++ {
		cctx, ccancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := oc.Election(name).Campaign(cctx, "candidate")
			done <- err
		}()
		for len(queueOf(t, admin, name)) < 2 {
			time.Sleep(10 * time.Millisecond) // no event says the candidate has queued
		}
		v := "v" + string(rune('0'+i))
		if err := la.Proclaim(ctx, v); err != nil {
			t.Fatalf("Proclaim: %v", err)
		}
		awaitLeader(t, obs, dlock.Leader{Value: v, Term: la.Term()}, la.Term())
		ccancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Campaign = %v", err)
		}
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	awaitLeader(t, obs, dlock.Leader{}, la.Term())
}

// TestCandidateSessionExpires (after CURATOR-696, two leaders at once when
// a candidate took its expired session's node for its own): a candidate
// cut off while it waits loses its session, and with it its node; another
// candidate is elected meanwhile. Back, the first one campaigns on its new
// session behind the leader, never beside it, and is elected on a node its
// new session owns once the leader resigns.
func TestCandidateSessionExpires(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	const session = 2 * time.Second
	admin := testAdmin(t, servers)
	name := uniqueName(t)
	a, _, _ := testClient(t, servers, testSession)
	b, db, kb := testClient(t, servers, session)
	c, _, _ := testClient(t, servers, testSession)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	la, err := a.Election(name).Campaign(ctx, "a")
	if err != nil {
		t.Fatalf("Campaign a: %v", err)
	}
	chb := make(chan *dlock.Leadership, 1)
	go func() {
		lb, err := b.Election(name).Campaign(ctx, "b")
		if err != nil {
			t.Errorf("Campaign b: %v", err)
		}
		chb <- lb
	}()
	for len(queueOf(t, admin, name)) < 2 {
		time.Sleep(10 * time.Millisecond) // no event says the candidate has queued
	}
	oldSession := db.conn.SessionID()
	kb.partition(true)
	chc := make(chan *dlock.Leadership, 1)
	go func() {
		lc, err := c.Election(name).Campaign(ctx, "c")
		if err != nil {
			t.Errorf("Campaign c: %v", err)
		}
		chc <- lc
	}()
	for len(queueOf(t, admin, name)) < 3 {
		time.Sleep(10 * time.Millisecond)
	}
	// b's node goes with its session, 2 s after the cut: c is then next.
	for len(queueOf(t, admin, name)) > 2 {
		time.Sleep(50 * time.Millisecond) // no event of b's expiry reaches the test
	}
	if err := la.Resign(ctx); err != nil {
		t.Fatalf("Resign a: %v", err)
	}
	lc := <-chc
	if lc == nil {
		t.FailNow()
	}
	kb.partition(false)
	// b comes back on a new session and queues again, behind c.
	for len(queueOf(t, admin, name)) < 2 || db.conn.SessionID() == oldSession {
		time.Sleep(50 * time.Millisecond) // no event says b has queued again
	}
	select {
	case lb := <-chb:
		t.Fatalf("b elected (term %d) while c leads (term %d)", lb.Term(), lc.Term())
	default:
	}
	if l, err := a.Election(name).Leader(ctx); err != nil || l != (dlock.Leader{Value: "c", Term: lc.Term()}) {
		t.Errorf("Leader = %+v, %v; want c's term %d", l, err, lc.Term())
	}
	if err := lc.Resign(ctx); err != nil {
		t.Fatalf("Resign c: %v", err)
	}
	var lb *dlock.Leadership
	select {
	case lb = <-chb:
	case <-time.After(20 * time.Second):
		t.Fatal("b not elected within 20 s of c's resignation")
	}
	if lb == nil {
		t.FailNow()
	}
	if lb.Term() <= lc.Term() {
		t.Errorf("b's term %d after c's %d", lb.Term(), lc.Term())
	}
	q := queueOf(t, admin, name)
	if len(q) != 1 {
		t.Fatalf("queue = %+v, want b's node alone", q)
	}
	_, st, err := admin.Get(testRoot + "/" + encodeName(name) + "/" + q[0].name)
	if err != nil {
		t.Fatalf("stat b's node: %v", err)
	}
	if st.EphemeralOwner != db.conn.SessionID() || st.EphemeralOwner == oldSession || uint64(st.Czxid) != lb.Term() {
		t.Errorf("b's node: owner %x czxid %d; want b's new session %x (not %x) and term %d",
			st.EphemeralOwner, st.Czxid, db.conn.SessionID(), oldSession, lb.Term())
	}
	if err := lb.Resign(ctx); err != nil {
		t.Errorf("Resign b: %v", err)
	}
}
