package zklock

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// checkGate, if set, is called when a driver is about to send a check of
// its node (a grant's proof, startCheck).
var checkGate atomic.Pointer[func()]

func init() {
	testHooks.checkSent = func() {
		if g := checkGate.Load(); g != nil {
			(*g)()
		}
	}
}

// TestStalledClientThenCutOff: the holder's requests to its follower are
// held up (a stall of the client-to-server direction of its connection)
// while it waits for the lock; the lock is released meanwhile, the holder
// sends its grant's proof, the stall ends and the heartbeat reads sent
// during it reach the follower back to back with the proof; right after
// the grant, the follower is cut off from the leader. The leader heard of
// the holder's session last before the stall (a follower reports its
// sessions' activity only in its replies to the leader's pings, and the
// leader does not renew a session on a request a follower forwards), so it
// expires the session a timeout after that and grants the lock to a waiter
// on its side: the holder's Done must have closed by then. A proof's TTL
// that counted from a heartbeat read by its send time alone (one sent
// timeout/4 before the proof, but stalled with it) outlived the session at
// the leader (quorum.go). The follower may report the flushed requests in
// a reply to a ping of the leader's between their arrival and the cut; the
// leader then expires the session later, and the round shows nothing (1
// run of 6 with the send-time rule).
//
// A grant after a wait, not a renewal: the portable layer renews a zklock
// lease every (TTL - margin)/2 at most (the TTL being less than asked), so
// a renewal's proof goes at most 9/32 of the timeout after the previous
// one, which the leader has heard of: too soon for the gap (see below).
func TestStalledClientThenCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts an ensemble of its own")
	}
	// A proof sent x into the stall counted from a stalled read reported a
	// TTL of 5/8 of the timeout T, less a margin of a tenth of that: the
	// holder's Done at x + 9T/16. The leader expires the session T after
	// the last report of it (from before the stall), reported up to
	// tickTime/2 late and rounded up to a tick: by T + 3/2 tickTime. So the
	// gap shows whatever the phase of the leader's pings and ticks if x >
	// 7T/16 + 3/2 tickTime, and go-zookeeper keeps the connection if x <
	// 2T/3 (it waits that long for a reply): at T = 10 s, 5.2 to 6.6 s.
	const session = 10 * time.Second
	const stallFor = 6 * time.Second
	nw := testserver.NewNetwork(t)
	procs := testserver.StartZooKeeper(t, 3, testserver.OnNetwork(nw))
	testserver.WaitZooKeeperServing(t, procs...)
	roles := zkRoles(t, procs)
	hs, ws := roles["follower"], roles["leader"]
	hc, hd, hk := testClient(t, []string{hs.Addr()}, session)
	wc, _, _ := testClient(t, []string{ws.Addr()}, session)
	admin := testAdmin(t, []string{ws.Addr()})
	name := uniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first, err := wc.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("first holder Lock: %v", err)
	}
	type lockResult struct {
		l   *dlock.Lease
		err error
	}
	watches := zkWatchCount(t, hs.Addr())
	got := make(chan lockResult, 1)
	go func() {
		l, err := hc.Mutex(name).Lock(ctx)
		got <- lockResult{l, err}
	}()
	for len(queueOf(t, admin, name)) < 2 {
		time.Sleep(10 * time.Millisecond) // no event says the holder has queued
	}
	// The holder's watch of the node ahead must be set before the stall,
	// or the release would not wake it: no event says it is, but its
	// follower, which has no other client, counts its watches.
	for zkWatchCount(t, hs.Addr()) < watches+waiterWatches {
		time.Sleep(10 * time.Millisecond)
	}

	// A read answered right before the stall: the leader's last news of the
	// session is no older than that, and go-zookeeper's wait for a reply
	// starts there.
	if _, _, err := hd.conn.Exists(hd.root); err != nil {
		t.Fatalf("read before the stall: %v", err)
	}
	stalled := time.Now()
	unstall := hk.proxies[0].Add(faultproxy.Any, faultproxy.Fault{Stall: true, Dir: faultproxy.Up})
	defer unstall()
	time.Sleep(stallFor) // the fault schedule

	checks := make(chan struct{}, 1)
	signal := func() {
		select {
		case checks <- struct{}{}:
		default:
		}
	}
	checkGate.Store(&signal)
	defer checkGate.Store(nil)
	if err := first.Unlock(ctx); err != nil {
		t.Fatalf("first holder Unlock: %v", err)
	}
	select {
	case <-checks:
	case <-ctx.Done():
		t.Fatal("the holder sent no check after the release")
	}
	unstall()
	t.Logf("the holder's check sent %v into the stall; stall ended", time.Since(stalled).Round(time.Millisecond))

	r := <-got
	if r.err != nil {
		t.Fatalf("holder Lock: %v", r.err)
	}
	held := r.l
	cutAndCheck(ctx, t, nw, hs, wc, name, held, stalled)
}

// TestStalledRenewalThenCutOff: as TestStalledClientThenCutOff, with the
// proof a renewal of a held lease: the holder's connection stalls right
// after a renewal's answer, the next renewal is sent during the stall and
// held until shortly before the lease's deadline, and the follower is cut
// off right after its answer. The renewal must go through (the lease is
// not lost to the stall), and the holder's Done close before the waiter's
// grant. The portable layer renews at most (TTL - margin)/2 = 9/32 of the
// timeout after the previous proof, which the follower had before the
// stall: the holder's Done comes at most 9/32 + 9/16 = 27/32 of the
// timeout after the leader's last news, short of the timeout, under either
// rule; the gap needs a proof sent later into a stall (a grant).
func TestStalledRenewalThenCutOff(t *testing.T) {
	if testing.Short() {
		t.Skip("short: starts an ensemble of its own")
	}
	const session = 10 * time.Second
	// Before the lease's deadline, 9/16 of the session after the previous
	// renewal was sent, with room for the answer.
	const stallFor = 4500 * time.Millisecond
	nw := testserver.NewNetwork(t)
	procs := testserver.StartZooKeeper(t, 3, testserver.OnNetwork(nw))
	testserver.WaitZooKeeperServing(t, procs...)
	roles := zkRoles(t, procs)
	hs, ws := roles["follower"], roles["leader"]
	_, d, hk := testClient(t, []string{hs.Addr()}, session)
	hd := &renewSignal{Driver: d, renewed: make(chan struct{}, 1)}
	hc, err := dlock.NewClient(hd)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	wc, _, _ := testClient(t, []string{ws.Addr()}, session)
	name := uniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	held, err := hc.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("holder Lock: %v", err)
	}
	renewed := func() {
		t.Helper()
		select {
		case <-hd.renewed:
		case <-ctx.Done():
			t.Fatal("no renewal")
		}
	}
	renewed()
	sent := make(chan struct{}, 1)
	gate := func(renewal bool, _ int) {
		if renewal {
			select {
			case sent <- struct{}{}:
			default:
			}
		}
	}
	roundGate.Store(&gate)
	defer roundGate.Store(nil)
	stalled := time.Now()
	unstall := hk.proxies[0].Add(faultproxy.Any, faultproxy.Fault{Stall: true, Dir: faultproxy.Up})
	defer unstall()
	select {
	case <-sent:
	case <-ctx.Done():
		t.Fatal("no renewal sent during the stall")
	}
	t.Logf("a renewal sent %v into the stall", time.Since(stalled).Round(time.Millisecond))
	time.Sleep(time.Until(stalled.Add(stallFor))) // the fault schedule
	unstall()
	renewed()
	t.Logf("the renewal answered %v after the stall began", time.Since(stalled).Round(time.Millisecond))
	cutAndCheck(ctx, t, nw, hs, wc, name, held, stalled)
}

// cutAndCheck cuts the holder's server hs off from the others right after
// held was granted or renewed, and checks that the waiter's client wc is
// granted name only after held's Done closed; times are logged from
// stalled.
func cutAndCheck(ctx context.Context, t *testing.T, nw *testserver.Network, hs *testserver.Proc, wc *dlock.Client, name string, held *dlock.Lease, stalled time.Time) {
	t.Helper()
	nw.Isolate(hs)
	defer nw.Heal(hs)
	cut := time.Now()
	t.Logf("cut %s (follower, the holder's) off %v after the stall began", hs.Name(), cut.Sub(stalled).Round(time.Millisecond))
	doneAt := make(chan time.Duration, 1)
	go func() { <-held.Done(); doneAt <- time.Since(stalled) }()

	l, err := wc.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("waiter Lock: %v", err)
	}
	granted := time.Since(stalled)
	select {
	case <-held.Done():
	default:
		t.Errorf("the waiter was granted the lock %v after the stall began while the holder's Done was still open",
			granted.Round(time.Millisecond))
	}
	select {
	case d := <-doneAt:
		t.Logf("since the stall began: holder's Done closed %v, waiter granted %v (margin %v)",
			d.Round(time.Millisecond), granted.Round(time.Millisecond), (granted - d).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Errorf("the holder's Done still open 30 s after the waiter's grant")
	}
	if err := l.Unlock(ctx); err != nil {
		t.Errorf("waiter Unlock: %v", err)
	}
}

// waiterWatches is how many watches a waiter for a mutex sets at its
// server: its own node's and the node ahead's.
const waiterWatches = 2

// zkWatchCount is the number of watches the server at addr holds, from its
// "mntr" command.
func zkWatchCount(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("mntr: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("mntr")); err != nil {
		t.Fatalf("mntr: %v", err)
	}
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		t.Fatalf("mntr: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "zk_watch_count"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("mntr: %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("mntr of %s: no zk_watch_count in %q", addr, b)
	return 0
}
