package zklock

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestRWReadersShareWritersQueue: readers share; a writer (an RWMutex's or
// a Mutex's) waits for them; a reader that comes after a waiting writer
// queues behind it; tokens rise across modes in grant order.
func TestRWReadersShareWritersQueue(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	ca, _, _ := testClient(t, servers, testSession)
	cb, _, _ := testClient(t, servers, testSession)
	cc, _, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	name := uniqueName(t)

	r1, err := ca.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	r2, err := cb.RWMutex(name).TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock beside a reader: %v", err)
	}
	if _, err := cc.RWMutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock while readers hold: %v, want ErrNotAcquired", err)
	}
	if _, err := cc.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("Mutex.TryLock while readers hold: %v, want ErrNotAcquired", err)
	}
	w := async(func() (*dlock.Lease, error) { return cc.RWMutex(name).Lock(ctx) })
	awaitQueue(t, admin, name, 3)
	if _, err := ca.RWMutex(name).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryRLock behind a waiting writer: %v, want ErrNotAcquired", err)
	}
	r3 := async(func() (*dlock.Lease, error) { return cb.RWMutex(name).RLock(ctx) })
	awaitQueue(t, admin, name, 4)

	unlock(t, r1)
	notYet(t, w, "writer while a reader holds")
	unlock(t, r2)
	wl := mustGet(t, w, "writer after the readers")
	notYet(t, r3, "reader queued behind the writer")
	if wl.Token() <= max(r1.Token(), r2.Token()) {
		t.Errorf("writer's token %d not above the readers' %d, %d", wl.Token(), r1.Token(), r2.Token())
	}
	unlock(t, wl)
	rl := mustGet(t, r3, "reader after the writer")
	if rl.Token() <= wl.Token() {
		t.Errorf("reader's token %d not above the writer's %d", rl.Token(), wl.Token())
	}
	// A Mutex is the writer side: it waits for the reader too.
	m := async(func() (*dlock.Lease, error) { return ca.Mutex(name).Lock(ctx) })
	awaitQueue(t, admin, name, 2)
	notYet(t, m, "mutex while a reader holds")
	unlock(t, rl)
	if ml := mustGet(t, m, "mutex after the reader"); ml.Token() <= rl.Token() {
		t.Errorf("mutex's token %d not above the reader's %d", ml.Token(), rl.Token())
	}
}

// TestRWReaderWaitsOnLastWriterOnly: a reader waits for the last writer
// ahead of it, not for the readers ahead or the nodes behind it
// (kazoo#649), and a cancelled writer leaves nothing that blocks the
// readers behind it.
func TestRWReaderWaitsOnLastWriterOnly(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	var cs []*dlock.Client
	for range 4 {
		c, _, _ := testClient(t, servers, testSession)
		cs = append(cs, c)
	}
	ctx := context.Background()
	name := uniqueName(t)

	w1, err := cs[0].RWMutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	r1 := async(func() (*dlock.Lease, error) { return cs[1].RWMutex(name).RLock(ctx) })
	awaitQueue(t, admin, name, 2)
	w2 := async(func() (*dlock.Lease, error) { return cs[2].RWMutex(name).Lock(ctx) })
	awaitQueue(t, admin, name, 3)
	r2 := async(func() (*dlock.Lease, error) { return cs[3].RWMutex(name).RLock(ctx) })
	awaitQueue(t, admin, name, 4)

	unlock(t, w1)
	r1l := mustGet(t, r1, "first reader after the first writer")
	notYet(t, w2, "second writer while a reader holds")
	notYet(t, r2, "reader behind the second writer")
	unlock(t, r1l)
	w2l := mustGet(t, w2, "second writer")
	notYet(t, r2, "reader while the second writer holds")
	unlock(t, w2l)
	r2l := mustGet(t, r2, "second reader")
	if !(w1.Token() < r1l.Token() && r1l.Token() < w2l.Token() && w2l.Token() < r2l.Token()) {
		t.Errorf("tokens in grant order: %d %d %d %d, want strictly rising", w1.Token(), r1l.Token(), w2l.Token(), r2l.Token())
	}

	// r2 holds. A writer waits behind it, a reader behind the writer; the
	// writer gives up, and the reader gets in beside r2.
	wctx, cancel := context.WithCancel(ctx)
	w3 := async(func() (*dlock.Lease, error) { return cs[0].RWMutex(name).Lock(wctx) })
	awaitQueue(t, admin, name, 2)
	r3 := async(func() (*dlock.Lease, error) { return cs[1].RWMutex(name).RLock(ctx) })
	awaitQueue(t, admin, name, 3)
	notYet(t, r3, "reader behind a waiting writer")
	cancel()
	if r := <-w3; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled writer: %v, want context.Canceled", r.err)
	}
	mustGet(t, r3, "reader after the writer ahead gave up")
	for _, e := range queueOf(t, admin, name) {
		if !e.kind.shared {
			t.Errorf("writer node %s left in the queue after its wait was cancelled", e.name)
		}
	}
}

// TestRWReaderLoss: a reader whose node is deleted on the server loses its
// lease; the other reader keeps its own, and still keeps writers out.
func TestRWReaderLoss(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	admin := testAdmin(t, servers)
	ca, _, _ := testClient(t, servers, testSession)
	cb, _, _ := testClient(t, servers, testSession)
	ctx := context.Background()
	name := uniqueName(t)

	r1, err := ca.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	r2, err := cb.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatalf("RLock: %v", err)
	}
	defer r2.Unlock(ctx)
	q := queueOf(t, admin, name)
	if len(q) != 2 || !q[0].kind.shared || !q[1].kind.shared {
		t.Fatalf("queue = %+v, want two readers", q)
	}
	if err := admin.Delete(testRoot+"/"+encodeName(name)+"/"+q[0].name, -1); err != nil {
		t.Fatalf("delete the first reader's node: %v", err)
	}
	select {
	case <-r1.Done():
	case <-time.After(testSession):
		t.Fatalf("reader's Done still open %v after its node was deleted", testSession)
	}
	if !errors.Is(r1.Err(), dlock.ErrLockLost) {
		t.Errorf("lost reader's Err = %v, want ErrLockLost", r1.Err())
	}
	select {
	case <-r2.Done():
		t.Fatalf("the other reader lost its lease too: %v", r2.Err())
	default:
	}
	if _, err := ca.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryLock while the other reader holds: %v, want ErrNotAcquired", err)
	}
}

// TestRWContention: readers and writers (RWMutex's and Mutex's) of three
// sessions contend; no writer ever holds with anyone, tokens rise.
func TestRWContention(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	name := uniqueName(t)
	b := newBook(0)
	var wg sync.WaitGroup
	const workers, rounds = 6, 12
	var cs []*dlock.Client
	for range 3 {
		c, _, _ := testClient(t, servers, testSession)
		cs = append(cs, c)
	}
	for i := range workers {
		c := cs[i%len(cs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for j := range rounds {
				shared := rand.IntN(3) > 0
				floor := b.floor()
				var l *dlock.Lease
				var err error
				switch {
				case shared:
					l, err = c.RWMutex(name).RLock(ctx)
				case j%2 == 0:
					l, err = c.RWMutex(name).Lock(ctx)
				default:
					l, err = c.Mutex(name).Lock(ctx)
				}
				if err != nil {
					t.Errorf("worker %d: %s: %v", i, mode(shared), err)
					return
				}
				b.granted(l, shared, floor)
				time.Sleep(time.Duration(2+rand.IntN(8)) * time.Millisecond) // the work under the lock
				b.unlock(t, l)
			}
		}()
	}
	wg.Wait()
	b.check(t)
	if b.grants != workers*rounds {
		t.Errorf("grants = %d, want %d", b.grants, workers*rounds)
	}
	t.Logf("%d grants, at most %d holders at once", b.grants, b.most)
}

// TestRWWriterNotStarved: writers get in while readers of four workers
// keep the lock read-held without a gap: each within 3 s (readers hold at
// most 150 ms each).
func TestRWWriterNotStarved(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	name := uniqueName(t)
	cr, _, _ := testClient(t, servers, testSession)
	cw, _, _ := testClient(t, servers, testSession)
	b := newBook(0)
	const hold, writers = 100 * time.Millisecond, 20

	stop := make(chan struct{})
	reading := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := b.floor()
				l, err := cr.RWMutex(name).RLock(ctx)
				if err != nil {
					t.Errorf("reader %d: %v", i, err)
					return
				}
				b.granted(l, true, floor)
				select {
				case reading <- struct{}{}:
				default:
				}
				time.Sleep(hold/2 + time.Duration(rand.IntN(int(hold)))) // the work under the lock
				b.unlock(t, l)
			}
		}()
	}
	<-reading
	// Writers, one after another, each behind the readers of the moment.
	var waits []time.Duration
	for range writers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		floor := b.floor()
		w, err := cw.RWMutex(name).Lock(ctx)
		waited := time.Since(start)
		cancel()
		if err != nil {
			t.Errorf("writer behind a stream of readers: %v after %v", err, waited)
			break
		}
		waits = append(waits, waited)
		b.granted(w, false, floor)
		time.Sleep(hold / 2) // readers keep asking meanwhile; none may get in
		b.unlock(t, w)
		time.Sleep(hold) // the readers' stream resumes
	}
	close(stop)
	wg.Wait()
	b.check(t)
	if len(waits) == 0 {
		return
	}
	slices.Sort(waits)
	t.Logf("%d writers waited p50 %v, max %v behind readers holding %v-%v each (%d grants)",
		len(waits), waits[len(waits)/2].Round(time.Millisecond), waits[len(waits)-1].Round(time.Millisecond), hold/2, 3*hold/2, b.grants)
	if worst := waits[len(waits)-1]; worst > 3*time.Second {
		t.Errorf("a writer waited %v behind readers that hold at most %v each", worst, 3*hold/2)
	}
}
