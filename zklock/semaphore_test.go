package zklock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestSemaphoreWaitersWatchTheNAhead: a waiter gets in when any of the n
// nodes just ahead of it goes (a holder in the middle, the head three
// nodes ahead, a holder after the waiter ahead gave up), not only its
// direct predecessor.
func TestSemaphoreWaitersWatchTheNAhead(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	var cs []*dlock.Client
	for range 5 {
		c, _, _ := testClient(t, servers, testSession)
		cs = append(cs, c)
	}
	ctx := context.Background()
	name := uniqueName(t)
	sem := func(i int) *dlock.Semaphore { return cs[i].Semaphore(name, 3) }

	var h []*dlock.Lease
	for i := range 3 {
		l, err := sem(i).TryAcquire(ctx)
		if err != nil {
			t.Fatalf("permit %d of 3: %v", i+1, err)
		}
		h = append(h, l)
	}
	if _, err := sem(3).TryAcquire(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("a fourth TryAcquire: %v, want ErrNotAcquired", err)
	}
	w3 := async(func() (*dlock.Lease, error) { return sem(3).Acquire(ctx) })
	awaitQueue(t, admin, name, 4)
	w4 := async(func() (*dlock.Lease, error) { return sem(4).Acquire(ctx) })
	awaitQueue(t, admin, name, 5)

	// The middle holder goes: the first waiter gets in, the second waits.
	unlock(t, h[1])
	l3 := mustGet(t, w3, "first waiter after a middle holder left")
	notYet(t, w4, "second waiter while 3 hold")
	// The head goes, three nodes ahead of the second waiter.
	unlock(t, h[0])
	l4 := mustGet(t, w4, "second waiter after the head left")
	if !(h[2].Token() < l3.Token() && l3.Token() < l4.Token()) {
		t.Errorf("tokens %d %d %d, want rising in grant order", h[2].Token(), l3.Token(), l4.Token())
	}

	// h[2], l3 and l4 hold. Two waiters; the first gives up, and the
	// second, which watched it, gets in when a holder goes.
	wctx, cancel := context.WithCancel(ctx)
	w1 := async(func() (*dlock.Lease, error) { return sem(1).Acquire(wctx) })
	awaitQueue(t, admin, name, 4)
	w3 = async(func() (*dlock.Lease, error) { return sem(3).Acquire(ctx) })
	awaitQueue(t, admin, name, 5)
	cancel()
	if r := <-w1; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Acquire: %v, want context.Canceled", r.err)
	}
	notYet(t, w3, "waiter while 3 hold")
	unlock(t, h[2]) // the head, which the waiter now watches
	mustGet(t, w3, "waiter behind a cancelled one, after a holder left")
	if n := len(queueOf(t, admin, name)); n != 3 {
		t.Errorf("queue = %d nodes, want the 3 holders", n)
	}
}

// TestSemaphoreMismatch: a name held or awaited under one limit refuses
// another, and a lock; the error names both limits; nothing is left in
// the queue by the refused requests.
func TestSemaphoreMismatch(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	ca, _, _ := testClient(t, servers, testSession)
	cb, _, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	name := uniqueName(t)

	l, err := ca.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	for what, try := range map[string]func(context.Context) (*dlock.Lease, error){
		"Semaphore(3).TryAcquire": cb.Semaphore(name, 3).TryAcquire,
		"Semaphore(3).Acquire":    cb.Semaphore(name, 3).Acquire,
		"Semaphore(1).Acquire":    cb.Semaphore(name, 1).Acquire,
		"Mutex.Lock":              cb.Mutex(name).Lock,
		"RWMutex.RLock":           cb.RWMutex(name).RLock,
		"RWMutex.TryRLock":        cb.RWMutex(name).TryRLock,
	} {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := try(actx)
		cancel()
		if !errors.Is(err, dlock.ErrInvalidArgument) {
			if got != nil {
				got.Unlock(ctx)
			}
			t.Errorf("%s on a semaphore of 2: %v, want ErrInvalidArgument", what, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "2: the name is held or awaited as a semaphore of 2 permits") {
			t.Errorf("%s: error %q does not name the limit in force", what, msg)
		}
	}
	if q := queueOf(t, admin, name); len(q) != 1 {
		t.Errorf("queue = %+v, want the holder's node alone", q)
	}
	unlock(t, l)

	m, err := ca.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	_, err = cb.Semaphore(name, 2).Acquire(ctx)
	if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), "Limit = 2: want 0") {
		t.Errorf("Semaphore(2).Acquire on a held lock: %v, want ErrInvalidArgument naming limits 2 and 0", err)
	}
	unlock(t, m)

	// Bad limits, at the driver.
	_, dd, _ := testClient(t, servers, testSession)
	for _, req := range []driver.Request{
		{Name: name, TTL: testSession, Limit: maxLimit + 1},
		{Name: name, TTL: testSession, Limit: 2, Mode: driver.Shared},
	} {
		if _, _, err := dd.Acquire(ctx, req); !errors.Is(err, driver.ErrInvalidArgument) {
			t.Errorf("Acquire(Limit %d, Mode %v) = %v, want ErrInvalidArgument", req.Limit, req.Mode, err)
		}
	}
	// An unknown mode (a value with a reader or a permit:
	// TestHolderNotReadersNorPermits).
	if _, _, err := dd.Acquire(ctx, driver.Request{Name: name, TTL: testSession, Mode: 7}); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("Acquire(Mode 7) = %v, want ErrNotSupported", err)
	}
}

// TestSemaphoreContention: 8 workers of 4 sessions share 3 permits; never
// more than 3 hold, tokens rise.
func TestSemaphoreContention(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	name := uniqueName(t)
	const n, workers, rounds = 3, 8, 10
	b := newBook(n)
	var cs []*dlock.Client
	for range 4 {
		c, _, _ := testClient(t, servers, testSession)
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	for i := range workers {
		s := cs[i%len(cs)].Semaphore(name, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for range rounds {
				floor := b.floor()
				l, err := s.Acquire(ctx)
				if err != nil {
					t.Errorf("worker %d: %v", i, err)
					return
				}
				b.granted(l, false, floor)
				time.Sleep(time.Duration(2+rand.IntN(8)) * time.Millisecond) // the work under the permit
				b.unlock(t, l)
			}
		}()
	}
	wg.Wait()
	b.check(t)
	if b.grants != workers*rounds {
		t.Errorf("grants = %d, want %d", b.grants, workers*rounds)
	}
	t.Logf("%d grants, at most %d permits held at once (limit %d)", b.grants, b.most, n)
}

// TestSemaphorePermitLoss: a permit whose node is deleted on the server is
// lost, and its slot goes to the waiter.
func TestSemaphorePermitLoss(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	ca, _, _ := testClient(t, servers, testSession)
	cb, _, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	name := uniqueName(t)

	p1, err := ca.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	p2, err := cb.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	defer p2.Unlock(ctx)
	w := async(func() (*dlock.Lease, error) { return cb.Semaphore(name, 2).Acquire(ctx) })
	q := awaitQueue(t, admin, name, 3)
	if err := admin.Delete(testRoot+"/"+encodeName(name)+"/"+q[0].name, -1); err != nil {
		t.Fatalf("delete the first permit's node: %v", err)
	}
	select {
	case <-p1.Done():
	case <-time.After(testSession):
		t.Fatalf("permit's Done still open %v after its node was deleted", testSession)
	}
	if !errors.Is(p1.Err(), dlock.ErrLockLost) {
		t.Errorf("lost permit's Err = %v, want ErrLockLost", p1.Err())
	}
	mustGet(t, w, "waiter after a permit was lost")
	select {
	case <-p2.Done():
		t.Errorf("the other permit was lost too: %v", p2.Err())
	default:
	}
}

// TestKilledPermitHolderComesBack: a process holding one of 2 permits
// (zk://, WithTTL(4s)) is SIGKILLed while the other is held and a waiter
// waits; its permit comes back, to the waiter, within TTL + margin.
func TestKilledPermitHolderComesBack(t *testing.T) {
	if url := os.Getenv("ZKLOCK_PERMIT_URL"); url != "" {
		holdPermitUntilKilled(t, url, os.Getenv("ZKLOCK_PERMIT_NAME"))
		return
	}
	servers := testserver.ZooKeeper(t)
	url := "zk://" + strings.Join(servers, ",") + testRoot
	name := uniqueName(t)
	admin := testAdmin(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledPermitHolderComesBack$")
	cmd.Env = append(os.Environ(), "ZKLOCK_PERMIT_URL="+url, "ZKLOCK_PERMIT_NAME="+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the holder: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("holder: %q, %v", line, err)
	}

	c, err := dlock.Open(ctx, url, dlock.WithTTL(permitTTL))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	other, err := c.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatalf("the other permit: %v", err)
	}
	defer other.Unlock(ctx)
	w := async(func() (*dlock.Lease, error) { return c.Semaphore(name, 2).Acquire(ctx) })
	awaitQueue(t, admin, name, 3)
	start := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill the holder: %v", err)
	}
	l := mustGet(t, w, "waiter after the permit holder was killed")
	// One second of slack for scheduling on a loaded machine.
	if d := time.Since(start); d > permitTTL+permitTTL/10+time.Second {
		t.Errorf("SIGKILLed permit holder with TTL %v: permit back after %v, want within TTL + margin", permitTTL, d)
	} else {
		t.Logf("SIGKILLed permit holder with TTL %v: permit back after %v", permitTTL, d)
	}
	mustHold(t, other)
	mustHold(t, l)
}

const permitTTL = 4 * time.Second

func mustHold(t *testing.T, l *dlock.Lease) {
	t.Helper()
	select {
	case <-l.Done():
		t.Errorf("lease token %d ended: %v", l.Token(), l.Err())
	default:
	}
}

// holdPermitUntilKilled is the holder process of
// TestKilledPermitHolderComesBack.
func holdPermitUntilKilled(t *testing.T, url, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dlock.Open(ctx, url, dlock.WithTTL(permitTTL))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := c.Semaphore(name, 2).Acquire(ctx); err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	fmt.Println("held")
	select {} // until SIGKILL
}
