package zklock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// awaitQueueAtMost waits, on the admin's child watch, until name's queue
// has at most n nodes.
func awaitQueueAtMost(t *testing.T, admin *zk.Conn, name string, n int, within time.Duration) {
	t.Helper()
	parent := testRoot + "/" + encodeName(name)
	deadline := time.After(within)
	for {
		kids, _, w, err := admin.ChildrenW(parent)
		if errors.Is(err, zk.ErrNoNode) {
			return
		}
		if err != nil {
			t.Fatalf("watch queue: %v", err)
		}
		if len(queue(kids)) <= n {
			return
		}
		select {
		case <-w:
		case <-deadline:
			t.Fatalf("queue of %q still has %d nodes after %v, want at most %d", name, len(queue(kids)), within, n)
		}
	}
}

// TestUnavailableWhileCutOff (issue 11 item 8): a client cut off until its
// session expired, then healed. Every error its Acquire returns meanwhile
// is marked transient (driver.ErrUnavailable), so that a blocking Lock
// rides the outage out, and once healed it takes locks on its new session
// while the lock of the old one is reported lost.
func TestUnavailableWhileCutOff(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	const session = 2 * time.Second
	admin := testAdmin(t, servers)
	name := uniqueName(t)
	a, da, ka := testClient(t, servers, session)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	// The same, held on the driver alone: no lease deadline, only the
	// driver's Lost can tell.
	other := uniqueName(t)
	lo, _, err := da.Acquire(ctx, driver.Request{Name: other, TTL: session, Wait: true})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	oldSession := da.conn.SessionID()
	ka.partition(true)
	awaitQueueAtMost(t, admin, name, 0, 30*time.Second) // the server expired the session

	// While cut off: TryLock and Lock fail with a transient error.
	for _, wait := range []bool{false, true} {
		err := acquireErr(t, ctx, da, name, wait, session)
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Acquire(wait=%v) while cut off = %v, want an error matching ErrUnavailable", wait, err)
		} else {
			t.Logf("Acquire(wait=%v) while cut off: %v", wait, err)
		}
	}

	// A blocking Lock started during the outage (the symptom: it
	// returned "zk: could not connect to a server" at once).
	ch := lockAsync(ctx, a.Mutex(name))
	time.Sleep(time.Second) // the outage goes on (not a synchronisation)
	select {
	case r := <-ch:
		t.Fatalf("blocking Lock returned during the outage: %v, %v", r.l, r.err)
	default:
	}

	// Healed: the old lock is lost, and the Lock is granted on a new session.
	ka.partition(false)
	healed := time.Now()
	select {
	case <-la.Done():
	case <-time.After(3 * session):
		t.Fatalf("the lease of the expired session still open after the heal")
	}
	if !errors.Is(la.Err(), dlock.ErrLockLost) {
		t.Errorf("old lease Err = %v, want ErrLockLost", la.Err())
	}
	select {
	case <-lo.Lost():
	case <-time.After(3 * session):
		t.Fatalf("Lost() of a lock of the expired session still open %v after the heal", 3*session)
	}
	if err := lo.Release(ctx); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("Release of a lock of the expired session = %v, want ErrLockLost", err)
	}
	r := awaitLock(t, ch, 30*time.Second, "blocking Lock across the outage")
	t.Logf("granted %v after the heal", r.at.Sub(healed))
	if sid := da.conn.SessionID(); sid == oldSession {
		t.Errorf("granted on session %#x, the one that expired", sid)
	}
	if err := r.l.Unlock(ctx); err != nil {
		t.Errorf("Unlock: %v", err)
	}
}

// acquireErr calls Acquire until it returns an error other than its own
// context's deadline, and returns that error.
func acquireErr(t *testing.T, ctx context.Context, d driver.Driver, name string, wait bool, ttl time.Duration) error {
	t.Helper()
	for range 10 {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		l, _, err := d.Acquire(actx, driver.Request{Name: name, TTL: ttl, Wait: wait})
		cancel()
		if err == nil {
			l.Release(ctx)
			t.Fatalf("Acquire(wait=%v) succeeded while cut off", wait)
		}
		if err != context.DeadlineExceeded {
			return err
		}
	}
	t.Fatalf("Acquire(wait=%v) while cut off only ever timed out", wait)
	return nil
}

// TestFailedCleanupOnLiveSession: the server is down when the holder
// unlocks with a cancelled context and a waiter gives up its wait, and
// stays down for longer than any fixed retry budget; both sessions resume
// when it returns. Their nodes must not outlive the failed calls: the next
// client gets the lock within a session timeout, not when the sessions
// end.
func TestFailedCleanupOnLiveSession(t *testing.T) {
	procs := testserver.StartZooKeeper(t, 1)
	srv := procs[0]
	servers := []string{srv.Addr()}
	const session = 4 * time.Second
	admin := testAdmin(t, servers)
	name := uniqueName(t)
	a, da, _ := testClient(t, servers, session)
	b, db, _ := testClient(t, servers, session)
	c, dc, _ := testClient(t, servers, session)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	bctx, bcancel := context.WithCancel(ctx)
	chB := lockAsync(bctx, b.Mutex(name))
	awaitQueue(t, admin, name, 2)
	sidA, sidB := da.conn.SessionID(), db.conn.SessionID()

	srv.Stop()
	cancelled, ccancel := context.WithCancel(ctx)
	ccancel()
	if err := la.Unlock(cancelled); err == nil {
		t.Fatalf("Unlock with a cancelled context while the server is down succeeded")
	}
	bcancel()
	select {
	case r := <-chB:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled Lock = %v, %v; want context.Canceled", r.l, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("cancelled Lock did not return")
	}
	// The outage outlasts any bounded number of attempts the driver could
	// have made (each waits about a second for a server).
	const outage = 30 * time.Second
	time.Sleep(outage)
	srv.Start()
	// Each client reconnects on its own schedule; c's Lock would fail at
	// once while c has no session (a blocking Lock rides that out in the
	// portable layer; this test is about a's and b's nodes).
	for _, d := range []*Driver{da, db, dc} {
		awaitState(t, d.conn, zk.StateHasSession, 30*time.Second)
	}

	start := time.Now()
	lc, err := func() (*dlock.Lease, error) {
		lctx, lcancel := context.WithTimeout(ctx, 4*session)
		defer lcancel()
		return c.Mutex(name).Lock(lctx)
	}()
	if da.conn.SessionID() != sidA || db.conn.SessionID() != sidB {
		t.Fatalf("a session did not survive the restart (a %#x -> %#x, b %#x -> %#x): the test shows nothing",
			sidA, da.conn.SessionID(), sidB, db.conn.SessionID())
	}
	if err != nil {
		t.Fatalf("Lock after the restart, with the failed unlock's and cancelled wait's sessions alive: %v (queue %v)",
			err, queueOf(t, admin, name))
	}
	t.Logf("granted %v after the restart", time.Since(start))
	if err := lc.Unlock(ctx); err != nil {
		t.Errorf("Unlock: %v", err)
	}
}

// awaitState waits until conn is in state want.
func awaitState(t *testing.T, conn *zk.Conn, want zk.State, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for conn.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("connection in state %v after %v, want %v", conn.State(), within, want)
		}
		time.Sleep(20 * time.Millisecond) // go-zookeeper's state has no event the test can wait on here
	}
}

func cpuTime(t testing.TB) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestNoSpinAfterUserClosesConn: the user closes their own *zk.Conn under a
// held lock, a waiting Lock and a failed release. The lease ends, the wait
// returns, Close returns within its bound, and nothing spins: the process
// uses little CPU in the seconds after.
func TestNoSpinAfterUserClosesConn(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	conn, events, err := zk.Connect(servers, testSession, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	c, err := New(conn, events, &Options{Prefix: testRoot, SessionTimeout: testSession})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	other, _, _ := testClient(t, servers, testSession)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	held, busy := uniqueName(t), uniqueName(t)

	l, err := c.Mutex(held).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	lo, err := other.Mutex(busy).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	defer lo.Unlock(ctx)
	ch := lockAsync(ctx, c.Mutex(busy))
	awaitQueue(t, admin, busy, 2)

	before := cpuTime(t)
	start := time.Now()
	conn.Close()
	select {
	case <-l.Done():
	case <-time.After(testSession):
		t.Fatalf("held lease still open %v after its connection was closed", testSession)
	}
	select {
	case r := <-ch:
		if r.err == nil {
			t.Fatalf("Lock on a closed connection succeeded")
		}
		t.Logf("waiting Lock after the connection closed: %v", r.err)
	case <-time.After(testSession):
		t.Fatalf("waiting Lock still blocked %v after its connection was closed", testSession)
	}
	select {
	case <-c.Driver().(*Driver).connGone:
	case <-time.After(testSession):
		t.Fatalf("the driver did not notice the connection closed")
	}
	// Not transient: a blocking Lock must not retry a closed connection.
	for _, wait := range []bool{false, true} {
		_, _, err := c.Driver().Acquire(ctx, driver.Request{Name: held, TTL: testSession, Wait: wait})
		if !errors.Is(err, errConnClosed) || errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("Acquire(wait=%v) on a closed connection = %v, want errConnClosed, not marked transient", wait, err)
		}
	}
	const window = 3 * time.Second
	time.Sleep(time.Until(start.Add(window))) // the measurement's window, not a synchronisation
	if used := cpuTime(t) - before; used > window/10 {
		t.Errorf("%v of CPU in the %v after the user closed the connection, want under %v: something spins", used, window, window/10)
	} else {
		t.Logf("%v of CPU in the %v after the user closed the connection", used, window)
	}
	closeStart := time.Now()
	c.Close()
	if d := time.Since(closeStart); d > testSession+time.Second {
		t.Errorf("Close took %v after the user closed the connection", d)
	}
}

// TestReleaseAgainAfterFailure: the portable layer calls Release again
// after a failed one (context ended, servers unreachable). Each failure
// leaves one background removal; a later Release deletes the node or, once
// it is gone, reports our own release (nil) while the session that made it
// lives, and the loss (ErrLockLost) once that session has expired; it never
// touches another holder's lock.
func TestReleaseAgainAfterFailure(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	_, da, ka := testClient(t, servers, testSession)
	_, db, _ := testClient(t, servers, testSession)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cancelled, ccancel := context.WithCancel(ctx)
	ccancel()

	t.Run("cancelled", func(t *testing.T) {
		name := uniqueName(t)
		l := lockOf(t, ctx, da, name)
		if err := l.Release(cancelled); err != context.Canceled {
			t.Fatalf("Release with a cancelled context = %v, want context.Canceled itself", err)
		}
		awaitQueueAtMost(t, admin, name, 0, 10*time.Second)
		lb := lockOf(t, ctx, db, name) // someone else's lock now
		defer lb.Release(ctx)
		for range 2 {
			if err := l.Release(ctx); err != nil {
				t.Errorf("Release again after our background removal deleted the node, session alive = %v, want nil", err)
			}
		}
		if q := queueOf(t, admin, name); len(q) != 1 {
			t.Errorf("queue = %v, want the new holder's node alone", q)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		name := uniqueName(t)
		l := lockOf(t, ctx, da, name)
		ka.partition(true)
		for range 3 {
			rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			err := l.Release(rctx)
			rcancel()
			if err == nil {
				t.Fatalf("Release while cut off succeeded")
			}
			if !errors.Is(err, driver.ErrUnavailable) && err != context.DeadlineExceeded {
				t.Errorf("Release while cut off = %v, want a transient error or the context's", err)
			}
		}
		sess := da.conn.SessionID()
		ka.partition(false)
		awaitQueueAtMost(t, admin, name, 0, 3*testSession)
		err := l.Release(ctx)
		switch alive := da.conn.SessionID() == sess && !l.(*zkLock).sess.ended(); {
		case alive && err != nil:
			t.Errorf("Release after the heal, the node deleted by our background removal, session alive = %v, want nil", err)
		case !alive && !errors.Is(err, driver.ErrLockLost):
			t.Errorf("Release after the heal, the node gone with its session = %v, want ErrLockLost", err)
		}
	})
}

// TestTransientErrors: what may pass with the connection is marked
// transient, what the server decided is not.
func TestTransientErrors(t *testing.T) {
	reset := &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	for _, err := range []error{
		zk.ErrNoServer, zk.ErrConnectionClosed, zk.ErrSessionExpired, zk.ErrSessionMoved,
		errSessionEnded, errDisconnected, reset, io.EOF, fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
	} {
		if !transient(err) {
			t.Errorf("transient(%v) = false, want true", err)
		}
	}
	for _, err := range []error{
		zk.ErrNoAuth, zk.ErrAuthFailed, zk.ErrBadArguments, zk.ErrInvalidACL, zk.ErrNodeExists,
		zk.ErrNoNode, zk.ErrBadVersion, zk.ErrClosing, zk.ErrNotEmpty, errConnClosed, errEntryGone,
	} {
		if transient(err) {
			t.Errorf("transient(%v) = true, want false", err)
		}
	}
}

// TestDriverCloseBounded: a driver's Close returns within about a second
// whatever the servers do (driver contract), with calls in flight.
func TestDriverCloseBounded(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	for _, fault := range []string{"stalled", "refused"} {
		t.Run(fault, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			k := testLink(t, servers)
			d, err := dialAny(ctx, k.addrs(), Options{Prefix: testRoot})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			l, _, err := d.Acquire(ctx, driver.Request{Name: uniqueName(t), TTL: dlock.DefaultTTL, Wait: true})
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if fault == "stalled" {
				defer k.stall()()
			} else {
				k.partition(true)
			}
			// A renewal and a release in flight when Close comes.
			go l.Renew(ctx)
			go l.Release(ctx)
			time.Sleep(100 * time.Millisecond) // let them reach the connection (no event to wait on)
			start := time.Now()
			d.Close()
			if took := time.Since(start); took > 1500*time.Millisecond {
				t.Errorf("Close with the servers %s took %v, want about a second at most", fault, took)
			} else {
				t.Logf("Close with the servers %s took %v", fault, took)
			}
		})
	}
}

// TestBorrowedCloseLeavesNoNode: on a connection given to New, a release
// that got no answer (servers stalled) is still carried out after Close,
// which returns within about a second: the owner's session lives on, and
// the node would otherwise block the queue as long as it does.
func TestBorrowedCloseLeavesNoNode(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	k := testLink(t, servers)
	conn, events, err := zk.Connect(k.addrs(), testSession, zk.WithLogger(quiet{}), zk.WithLogInfo(false), zk.WithDialer(k.dial))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	d, err := NewDriver(conn, events, &Options{Prefix: testRoot, SessionTimeout: testSession, Dialer: k.dial})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := uniqueName(t)
	l := lockOf(t, ctx, d, name)
	sid := conn.SessionID()

	undo := k.stall()
	rctx, rcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if err := l.Release(rctx); err == nil {
		t.Fatalf("Release with the servers stalled succeeded")
	}
	rcancel()
	start := time.Now()
	d.Close()
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("Close on a borrowed connection with the servers stalled took %v, want about a second", took)
	}
	undo()
	awaitQueueAtMost(t, admin, name, 0, testSession)
	if conn.SessionID() != sid || conn.State() != zk.StateHasSession {
		t.Errorf("the owner's session changed (%#x -> %#x, %v): the node may have gone with it, not by removal", sid, conn.SessionID(), conn.State())
	}
}
