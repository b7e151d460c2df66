package zklock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// lockResult is the outcome of a Lock run in the background.
type lockResult struct {
	l   *dlock.Lease
	err error
	at  time.Time
}

func lockAsync(ctx context.Context, m *dlock.Mutex) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		l, err := m.Lock(ctx)
		ch <- lockResult{l, err, time.Now()}
	}()
	return ch
}

func awaitLock(t *testing.T, ch <-chan lockResult, within time.Duration, what string) lockResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(within):
		t.Fatalf("%s: not granted within %v", what, within)
	}
	panic("unreachable")
}

// TestGrantedTimeoutBelowAsked (issue 11 item 2): the servers cap the
// session timeout at maxSessionTimeout (20 ticks = 10 s here) and 20 s is
// asked. A holder cut off from the servers must see its lease end before
// the server expires its session and grants the next waiter.
func TestGrantedTimeoutBelowAsked(t *testing.T) {
	procs := testserver.StartZooKeeper(t, 1) // tickTime 500 ms: sessions of at most 10 s
	servers := []string{procs[0].Addr()}
	const asked = 20 * time.Second
	admin := testAdmin(t, servers)
	name := uniqueName(t)
	a, _, ka := testClient(t, servers, asked, dlock.WithTTL(asked))
	b, _, _ := testClient(t, servers, asked, dlock.WithTTL(asked))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	ch := lockAsync(ctx, b.Mutex(name))
	awaitQueue(t, admin, name, 2)
	start := time.Now()
	undo := ka.stall()
	defer undo()
	r := awaitLock(t, ch, 2*asked, "waiter after the holder was cut off")
	defer r.l.Unlock(ctx)
	granted := r.at.Sub(start)
	select {
	case <-la.Done():
		t.Logf("waiter granted %v after the cut; the holder's lease had ended (%v)", granted, la.Err())
	default:
		t.Fatalf("waiter granted %v after the holder was cut off while the holder's Done was still open (asked %v)", granted, asked)
	}
	if granted >= asked {
		t.Errorf("waiter granted %v after the cut: the server did not cap the session timeout below %v", granted, asked)
	}
	if notes := a.Capabilities().Notes; !strings.Contains(notes, "10s") || !strings.Contains(notes, "20s") {
		t.Errorf("Capabilities().Notes = %q: want the granted (10s) and asked (20s) session timeouts", notes)
	}
}

// TestConformanceCappedSession runs the conformance suite against a server
// whose maxSessionTimeout (2 s) is below every session timeout the drivers
// ask for: the TTLs themselves (4 s to 30 s) when the sessions follow the
// TTL, as on zk://, and 4 s (testSession) on a connection given to New,
// whose granted timeout is learnt by a probe. Dial with a fixed session
// timeout learns it the way per-TTL sessions do; it gets the validity
// checks alone.
//
// Its suites run beside each other (t.Parallel): on a server of their own
// they mostly wait on TTLs, and they are the longest part of the package.
func TestConformanceCappedSession(t *testing.T) {
	procs := testserver.StartZooKeeper(t, 1, testserver.ZKMaxSessionTimeout(2*time.Second))
	servers := []string{procs[0].Addr()}
	for _, tc := range []struct {
		name     string
		session  time.Duration
		borrowed bool
		suite    bool
	}{
		{"Dial", testSession, false, false},
		{"New", testSession, true, true},
		{"PerTTL", 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			t.Run("Validity", func(t *testing.T) {
				h, err := openHarness(t, servers, tc.session, tc.borrowed)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(h.Close)
				checkGranted(t, h, testSession, 2*time.Second)
				if tc.session == 0 {
					// Below the servers' minSessionTimeout (2 ticks): granted more.
					checkGranted(t, h, 300*time.Millisecond, time.Second)
				}
			})
			if !tc.suite {
				return
			}
			drivertest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
				return openHarness(t, servers, tc.session, tc.borrowed)
			})
		})
	}
}

// checkGranted takes a lock with ttl from a harness driver and checks that
// the grant and a renewal report the granted session timeout as TTL.
func checkGranted(t *testing.T, h *harness, ttl, granted time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := h.MakeDriver(ctx)
	if err != nil {
		t.Fatalf("MakeDriver: %v", err)
	}
	defer d.Close()
	l, v, err := d.Acquire(ctx, driver.Request{Name: uniqueName(t), TTL: ttl, Wait: true})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer l.Release(ctx)
	// The TTL reported derives from the granted timeout: 5/8 of it in the
	// steady state, a third at least (the leader may hear of a follower's
	// sessions late, see quorum.go); never the one asked.
	okTTL := func(got time.Duration) bool { return got >= granted/3 && got <= granted-granted/4-granted/8 }
	if !okTTL(v.TTL) {
		t.Errorf("TTL %v asked: grant's Validity.TTL = %v, want 1/3 to 5/8 of the granted session timeout %v", ttl, v.TTL, granted)
	}
	if v, err := l.Renew(ctx); err != nil || !okTTL(v.TTL) {
		t.Errorf("TTL %v asked: Renew = %v, %v; want Validity.TTL 1/3 to 5/8 of %v", ttl, v.TTL, err, granted)
	}
	notes := d.(driver.Capable).Capabilities().Notes
	if !strings.Contains(notes, granted.String()+" granted") {
		t.Errorf("Capabilities().Notes = %q: want the granted %v", notes, granted)
	}
}

// TestTTLSetsSessionTimeout (issue 11 item 9): without session_timeout in
// the URL, the TTL asked with dlock.WithTTL is the session timeout, on the
// client (Open's options) and on one mutex. A holder cut off is replaced
// within TTL + margin, not after the 10 s default.
func TestTTLSetsSessionTimeout(t *testing.T) {
	servers := testserver.ZooKeeper(t) // maxSessionTimeout 10 s
	const ttl = 4 * time.Second
	for _, tc := range []struct {
		name       string
		clientOpts []dlock.Option
		mutexOpts  []dlock.Option
	}{
		{"client", []dlock.Option{dlock.WithTTL(ttl)}, nil},
		{"mutex", nil, []dlock.Option{dlock.WithTTL(ttl)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			admin := testAdmin(t, servers)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			open := func() (*dlock.Client, *link) {
				k := testLink(t, servers)
				c, err := dlock.Open(ctx, "zk://"+strings.Join(k.addrs(), ",")+testRoot, tc.clientOpts...)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				t.Cleanup(func() { c.Close() })
				return c, k
			}
			a, ka := open()
			b, _ := open()
			name := uniqueName(t)
			la, err := a.Mutex(name, tc.mutexOpts...).Lock(ctx)
			if err != nil {
				t.Fatalf("Lock: %v", err)
			}
			ch := lockAsync(ctx, b.Mutex(name, tc.mutexOpts...))
			awaitQueue(t, admin, name, 2)
			start := time.Now()
			ka.partition(true)
			r := awaitLock(t, ch, 30*time.Second, "waiter after the holder was cut off")
			defer r.l.Unlock(ctx)
			// One second of slack for scheduling on a loaded machine.
			if d := r.at.Sub(start); d > ttl+ttl/10+time.Second {
				t.Errorf("cut-off holder with TTL %v replaced after %v, want within TTL + margin", ttl, d)
			} else {
				t.Logf("cut-off holder with TTL %v replaced after %v", ttl, d)
			}
			select {
			case <-la.Done():
			default:
				t.Errorf("waiter granted while the cut-off holder's Done was still open")
			}
			if !errors.Is(la.Err(), dlock.ErrLockLost) {
				t.Errorf("holder Err = %v, want ErrLockLost", la.Err())
			}
		})
	}
}

// TestKilledHolderReplacedWithinTTL (issue 11 item 9, as seen with `dlock
// run --ttl 4s`): a holder process opened with zk:// and WithTTL(4s) is
// SIGKILLed; the waiter gets the lock within TTL + margin.
func TestKilledHolderReplacedWithinTTL(t *testing.T) {
	if url := os.Getenv("ZKLOCK_HOLD_URL"); url != "" {
		holdUntilKilled(t, url, os.Getenv("ZKLOCK_HOLD_NAME"))
		return
	}
	servers := testserver.ZooKeeper(t) // maxSessionTimeout 10 s
	const ttl = 4 * time.Second
	url := "zk://" + strings.Join(servers, ",") + testRoot
	name := uniqueName(t)
	admin := testAdmin(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledHolderReplacedWithinTTL$")
	cmd.Env = append(os.Environ(), "ZKLOCK_HOLD_URL="+url, "ZKLOCK_HOLD_NAME="+name, "ZKLOCK_HOLD_TTL="+ttl.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the holder: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("holder: %q, %v", line, err)
	}

	b, err := dlock.Open(ctx, url, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	ch := lockAsync(ctx, b.Mutex(name))
	awaitQueue(t, admin, name, 2)
	start := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill the holder: %v", err)
	}
	r := awaitLock(t, ch, 30*time.Second, "waiter after the holder was killed")
	defer r.l.Unlock(ctx)
	// One second of slack for scheduling on a loaded machine.
	if d := r.at.Sub(start); d > ttl+ttl/10+time.Second {
		t.Errorf("SIGKILLed holder with TTL %v replaced after %v, want within TTL + margin", ttl, d)
	} else {
		t.Logf("SIGKILLed holder with TTL %v replaced after %v", ttl, d)
	}
}

// holdUntilKilled is the holder process of TestKilledHolderReplacedWithinTTL.
func holdUntilKilled(t *testing.T, url, name string) {
	ttl, err := time.ParseDuration(os.Getenv("ZKLOCK_HOLD_TTL"))
	if err != nil {
		t.Fatalf("ZKLOCK_HOLD_TTL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dlock.Open(ctx, url, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := c.Mutex(name).Lock(ctx); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	fmt.Println("held")
	select {} // until SIGKILL
}

// TestPerTTLSessions: without a session timeout, a client keeps one session
// per distinct TTL (Dial's first one closed if no lock used it), refuses a
// ninth distinct TTL clearly, and reports a new TTL's session as
// unavailable at once while the servers refuse connections.
func TestPerTTLSessions(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	k := testLink(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := dlock.Open(ctx, "zk://"+strings.Join(k.addrs(), ",")+testRoot, dlock.WithTTL(3*time.Second))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	p := c.Driver().(*perTTL)
	first := p.first

	sessions := func() map[time.Duration]int64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		ids := map[time.Duration]int64{}
		for ttl, s := range p.sessions {
			if s.d != nil {
				ids[ttl] = s.d.conn.SessionID()
			}
		}
		return ids
	}
	for i, ttl := range []time.Duration{3 * time.Second, 4 * time.Second, 3 * time.Second} {
		l, err := c.Mutex(uniqueName(t), dlock.WithTTL(ttl)).Lock(ctx)
		if err != nil {
			t.Fatalf("Lock %d (TTL %v): %v", i, ttl, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
	}
	ids := sessions()
	if len(ids) != 2 || ids[3*time.Second] == 0 || ids[4*time.Second] == 0 || ids[3*time.Second] == ids[4*time.Second] {
		t.Errorf("sessions by TTL = %v, want two distinct ones for 3s and 4s (Dial's first one closed unused)", ids)
	}
	select {
	case <-first.closing:
	default:
		t.Errorf("Dial's first session (TTL %v) still open although no lock used it", dlock.DefaultTTL)
	}

	// Up to 8 sessions: 6 more TTLs, then the ninth is refused.
	for i := range 6 {
		ttl := time.Duration(5+i) * time.Second
		if _, err := c.Mutex(uniqueName(t), dlock.WithTTL(ttl)).TryLock(ctx); err != nil {
			t.Fatalf("TryLock with TTL %v: %v", ttl, err)
		}
	}
	_, err = c.Mutex(uniqueName(t), dlock.WithTTL(11*time.Second)).TryLock(ctx)
	if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), "TTL") {
		t.Errorf("TryLock with a ninth distinct TTL = %v, want ErrInvalidArgument naming the TTLs", err)
	}

	// A new TTL while the servers refuse connections: reported at once.
	c2, err := dlock.Open(ctx, "zk://"+strings.Join(k.addrs(), ",")+testRoot)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c2.Close()
	k.partition(true)
	start := time.Now()
	_, err = c2.Mutex(uniqueName(t), dlock.WithTTL(2*time.Second)).TryLock(context.Background())
	if !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("TryLock with a new TTL, servers refusing = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("TryLock with a new TTL, servers refusing, took %v", d)
	}
	k.partition(false)
	l, err := c2.Mutex(uniqueName(t), dlock.WithTTL(2*time.Second)).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock with that TTL after the heal: %v", err)
	}
	l.Unlock(ctx)
}
