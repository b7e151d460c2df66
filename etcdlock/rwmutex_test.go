package etcdlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestRWShareAndExclude: readers share; a writer (an RWMutex's or a
// Mutex's of the same name) excludes them and is excluded by them; a
// waiting writer keeps later readers out.
func TestRWShareAndExclude(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, b, c := newLockClient(t, cli), newLockClient(t, cli), newLockClient(t, cli)

	r1, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.RWMutex(name).TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock while a reader holds: %v, want a second reader", err)
	}
	for what, try := range map[string]func(context.Context) (*dlock.Lease, error){
		"RWMutex.TryLock": c.RWMutex(name).TryLock,
		"Mutex.TryLock":   c.Mutex(name).TryLock,
	} {
		if l, err := try(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Errorf("%s while readers hold: %v, %v; want ErrNotAcquired", what, l, err)
			if l != nil {
				l.Unlock(ctx)
			}
		}
	}

	// A writer queues behind the readers; a reader after it queues behind it.
	wl := make(chan *dlock.Lease, 1)
	go func() {
		l, err := c.Mutex(name).Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		wl <- l
	}()
	waitQueued(t, ctx, cli, name, 3)
	if l, err := b.RWMutex(name).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("TryRLock behind a waiting writer: %v, %v; want ErrNotAcquired", l, err)
	}
	rl := make(chan *dlock.Lease, 1)
	go func() {
		l, err := b.RWMutex(name).RLock(ctx)
		if err != nil {
			t.Error(err)
		}
		rl <- l
	}()
	waitQueued(t, ctx, cli, name, 4)
	if err := r1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	w := within(t, wl, 5*time.Second, "writer after the readers left")
	select {
	case l := <-rl:
		t.Fatalf("reader %d granted while writer %d holds", l.Token(), w.Token())
	default:
	}
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r3 := within(t, rl, 5*time.Second, "reader after the writer left")
	if !(r1.Token() < r2.Token() && r2.Token() < w.Token() && w.Token() < r3.Token()) {
		t.Errorf("tokens r1 %d, r2 %d, w %d, r3 %d: want increasing in grant order", r1.Token(), r2.Token(), w.Token(), r3.Token())
	}
	if err := r3.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRWContention: readers and writers on clients of their own, in a loop:
// never a reader with a writer, never two writers, tokens in order, and
// readers do hold together.
func TestRWContention(t *testing.T) {
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := benchName(t)
	g := newGrants(0)
	const readers, writers, rounds = 6, 3, 15
	var wg sync.WaitGroup
	for i := range readers + writers {
		c := newLockClient(t, newClient(t, eps))
		shared := i < readers
		wg.Go(func() {
			rw := c.RWMutex(name)
			for range rounds {
				lock := rw.Lock
				if shared {
					lock = rw.RLock
				}
				l, err := lock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				g.grant(l, shared)
				time.Sleep(2 * time.Millisecond) // hold a while, so that readers overlap
				g.release(l)
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	g.check(t)
	t.Logf("%d grants, at most %d readers at once", g.n, g.peak)
	if g.n != (readers+writers)*rounds {
		t.Errorf("%d grants, want %d", g.n, (readers+writers)*rounds)
	}
	if g.peak < 2 {
		t.Errorf("at most %d holder at once: readers never shared", g.peak)
	}
}

// TestRWWriterNotStarved: readers that keep the lock read-held without a
// gap do not keep a writer out: readers that come after the writer queue
// behind it.
func TestRWWriterNotStarved(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	const readers = 4
	stop := make(chan struct{})
	var wg sync.WaitGroup
	first := make(chan struct{}, readers)
	for range readers {
		c := newLockClient(t, cli)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := c.RWMutex(name).RLock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				select {
				case first <- struct{}{}:
				default:
				}
				time.Sleep(30 * time.Millisecond) // overlapping holds: never a moment without a reader
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	<-first
	w := newLockClient(t, cli)
	start := time.Now()
	l, err := w.RWMutex(name).Lock(ctx)
	took := time.Since(start)
	close(stop)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("writer granted %v after it asked, with %d readers streaming", took, readers)
	if took > 2*time.Second {
		t.Errorf("writer waited %v behind readers that hold 30 ms each", took)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// TestRWReaderWaitsOnWritersOnly: a reader queued behind a writer is let in
// when that writer gives up its wait, while the readers ahead still hold;
// a cancelled reader's wait leaves nothing that blocks a later writer.
func TestRWReaderWaitsOnWritersOnly(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, b, c := newLockClient(t, cli), newLockClient(t, cli), newLockClient(t, cli)

	r1, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() {
		l, err := b.RWMutex(name).Lock(wctx)
		if err == nil {
			l.Unlock(ctx)
		}
		werr <- err
	}()
	waitQueued(t, ctx, cli, name, 2)
	rl := make(chan *dlock.Lease, 1)
	go func() {
		l, err := c.RWMutex(name).RLock(ctx)
		if err != nil {
			t.Error(err)
		}
		rl <- l
	}()
	waitQueued(t, ctx, cli, name, 3)
	wcancel()
	if err := within(t, werr, 5*time.Second, "cancelled writer"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled writer: %v, want context.Canceled", err)
	}
	start := time.Now()
	r2 := within(t, rl, 5*time.Second, "reader once the writer ahead gave up")
	t.Logf("reader granted %v after the writer ahead gave up, the first reader still holding", time.Since(start))
	if keys := queueKeys(t, ctx, cli, name); len(keys) != 2 {
		t.Errorf("queue %q, want the two readers' keys", keys)
	}

	// A reader's cancelled wait (behind a writer) leaves no key behind.
	wl := make(chan *dlock.Lease, 1)
	go func() {
		l, err := b.RWMutex(name).Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		wl <- l
	}()
	waitQueued(t, ctx, cli, name, 3)
	rctx, rcancel := context.WithCancel(ctx)
	rerr := make(chan error, 1)
	go func() {
		_, err := a.RWMutex(name).RLock(rctx)
		rerr <- err
	}()
	waitQueued(t, ctx, cli, name, 4)
	rcancel()
	if err := within(t, rerr, 5*time.Second, "cancelled reader"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v, want context.Canceled", err)
	}
	if keys := queueKeys(t, ctx, cli, name); len(keys) != 3 {
		t.Errorf("queue %q after a reader's cancelled wait, want two readers and the writer", keys)
	}
	r1.Unlock(ctx)
	r2.Unlock(ctx)
	w := within(t, wl, 5*time.Second, "writer once the readers left")
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRWReaderLoss: a reader whose key is deleted (as by `etcdctl del`)
// is told: its lease's Done closes with ErrLockLost, and a writer gets in.
func TestRWReaderLoss(t *testing.T) {
	eps := testserver.Etcd(t)
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, b := newLockClient(t, cli), newLockClient(t, cli)
	r, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys := queueKeys(t, ctx, cli, name)
	if _, err := cli.Delete(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	within(t, r.Done(), 5*time.Second, "reader's Done after its key's deletion")
	if !errors.Is(r.Err(), dlock.ErrLockLost) {
		t.Errorf("lost reader's Err = %v, want ErrLockLost", r.Err())
	}
	w, err := b.RWMutex(name).TryLock(ctx)
	if err != nil {
		t.Fatalf("writer after the reader's loss: %v", err)
	}
	w.Unlock(ctx)
	r.Unlock(ctx)
}
