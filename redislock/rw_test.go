package redislock

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// Read-write locks on a single node (scripts/single.lua), through the
// portable API, each client on a go-redis client of its own as separate
// processes would be.

// TestRWInvariants: readers and writers (RWMutex.Lock and Mutex, which is
// the same writer side) of one name on four clients: never a reader with a
// writer, tokens in grant order, and readers do share.
func TestRWInvariants(t *testing.T) {
	addr := testserver.Redis(t)[0]
	name := uniqueName(t)
	var cs []*dlock.Client
	for range 4 {
		cs = append(cs, newClient(t, adminClient(t, addr), dlock.WithTTL(5*time.Second)))
	}
	h := newHolders(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for i := range 12 {
		c := cs[i%len(cs)]
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				kind := []string{"rlock", "rlock", "rlock", "lock", "mutex"}[rand.N(5)]
				var l *dlock.Lease
				var err error
				switch kind {
				case "rlock":
					l, err = c.RWMutex(name).RLock(ctx)
				case "lock":
					l, err = c.RWMutex(name).Lock(ctx)
				default:
					l, err = c.Mutex(name).Lock(ctx)
				}
				if err != nil {
					t.Errorf("%s: %v", kind, err)
					return
				}
				h.granted(l, kind == "rlock")
				time.Sleep(time.Duration(rand.N(10)) * time.Millisecond) // holding: the work
				h.releasing(l)
				if err := l.Unlock(ctx); err != nil {
					t.Errorf("unlock (%s, token %d): %v", kind, l.Token(), err)
				}
				mu.Lock()
				counts[kind]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("grants %v; %d made while another reader held", counts, h.overlaps)
	if counts["rlock"] == 0 || counts["lock"] == 0 || counts["mutex"] == 0 {
		t.Errorf("grants %v: want some of each kind", counts)
	}
	if h.overlaps == 0 {
		t.Error("no reader was ever granted beside another: readers do not share")
	}
}

// TestWriterNotStarved: a stream of overlapping readers, never fewer than
// one holding, does not keep a writer out: once it waits, readers that come
// after it queue behind it.
func TestWriterNotStarved(t *testing.T) {
	addr := testserver.Redis(t)[0]
	name := uniqueName(t)
	rc := []*dlock.Client{newClient(t, adminClient(t, addr)), newClient(t, adminClient(t, addr))}
	wc := newClient(t, adminClient(t, addr))
	h := newHolders(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 15 * time.Millisecond) // staggered, so that their holds overlap
			for {
				select {
				case <-done:
					return
				default:
				}
				l, err := rc[i%2].RWMutex(name).RLock(ctx)
				if err != nil {
					t.Errorf("rlock: %v", err)
					return
				}
				h.granted(l, true)
				time.Sleep(60 * time.Millisecond)
				h.releasing(l)
				if err := l.Unlock(ctx); err != nil {
					t.Errorf("runlock: %v", err)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // the readers' stream is running
	start := time.Now()
	l, err := wc.RWMutex(name).Lock(ctx)
	waited := time.Since(start)
	if err != nil {
		close(done)
		wg.Wait()
		t.Fatalf("writer: %v", err)
	}
	h.granted(l, false)
	time.Sleep(100 * time.Millisecond) // readers keep trying meanwhile
	h.releasing(l)
	if err := l.Unlock(ctx); err != nil {
		t.Error(err)
	}
	close(done)
	wg.Wait()
	t.Logf("writer waited %v behind the readers' stream (%d grants)", waited, h.grants)
	// The readers that hold when the writer queues hold 60 ms each; 2 s
	// leaves room for a loaded machine, and is far below what starvation
	// would take (the stream never stops on its own).
	if waited > 2*time.Second {
		t.Errorf("writer waited %v, want under 2s", waited)
	}
}

// TestRWTokensAndHandOver: tokens form one sequence across writers,
// readers and the Mutex of the name, and a writer's release hands the lock
// to every reader waiting at the head of the queue at once.
func TestRWTokensAndHandOver(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	a := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))
	b := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))
	rw := a.RWMutex(name)

	w, err := rw.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.RWMutex(name).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryRLock with a writer holding: %v, want ErrNotAcquired", err)
	}
	if _, err := b.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("Mutex.TryLock with a writer holding: %v, want ErrNotAcquired", err)
	}
	rch := make(chan lockResult, 2)
	for range 2 {
		go func() {
			l, err := b.RWMutex(name).RLock(ctx)
			rch <- lockResult{l, err, time.Now()}
		}()
	}
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	admin := adminClient(t, addr)
	waitFor(t, 5*time.Second, "both readers to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 2 })
	released := time.Now()
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	var readers []*dlock.Lease
	for range 2 {
		r := awaitLock(t, rch, 2*time.Second, "reader after the writer's release")
		if d := r.at.Sub(released); d > time.Second {
			t.Errorf("reader granted %v after the release: not handed over", d)
		}
		if r.l.Token() <= w.Token() {
			t.Errorf("reader's token %d not above the writer's %d", r.l.Token(), w.Token())
		}
		readers = append(readers, r.l)
	}
	if readers[0].Token() == readers[1].Token() {
		t.Errorf("both readers have token %d", readers[0].Token())
	}
	// A third reader joins them; a writer and a Mutex do not.
	r3, err := a.RWMutex(name).TryRLock(ctx)
	if err != nil {
		t.Fatalf("TryRLock beside two readers: %v", err)
	}
	if _, err := a.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("Mutex.TryLock with readers holding: %v, want ErrNotAcquired", err)
	}
	st, err := a.Status(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Holders != 3 || st.Mode != driver.Shared || st.Token != r3.Token() || st.TTLLeft <= 0 {
		t.Errorf("Status with three readers = %+v, want Held, 3 Shared holders, Token %d", st, r3.Token())
	}
	top := r3.Token()
	for _, l := range append(readers, r3) {
		top = max(top, l.Token())
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	m, err := b.Mutex(name).TryLock(ctx)
	if err != nil {
		t.Fatalf("Mutex.TryLock after the readers left: %v", err)
	}
	if m.Token() <= top {
		t.Errorf("Mutex's token %d not above the readers' %d", m.Token(), top)
	}
	st, err = a.Status(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Holders != 1 || st.Mode != driver.Exclusive || st.Token != m.Token() {
		t.Errorf("Status with a Mutex holding = %+v, want 1 exclusive holder, token %d", st, m.Token())
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := a.Status(ctx, name); err != nil || st.Held || st.Holders != 0 {
		t.Errorf("Status when free = %+v, %v", st, err)
	}
}

// TestRWCancelledWriterLeavesNoGhost: a reader holds, a writer waits, a
// second reader waits behind the writer; the writer gives up. The second
// reader is let in at once, beside the first, not held back by the
// writer's entry until it dies.
func TestRWCancelledWriterLeavesNoGhost(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	admin := adminClient(t, addr)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	a := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))
	w := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))
	b := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))

	r1, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Unlock(ctx)
	wctx, wcancel := context.WithCancel(ctx)
	wch := make(chan lockResult, 1)
	go func() {
		l, err := w.RWMutex(name).Lock(wctx)
		wch <- lockResult{l, err, time.Now()}
	}()
	waitFor(t, 5*time.Second, "the writer to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 1 })
	if _, err := b.RWMutex(name).TryRLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryRLock behind a waiting writer: %v, want ErrNotAcquired", err)
	}
	rch := make(chan lockResult, 1)
	go func() {
		l, err := b.RWMutex(name).RLock(ctx)
		rch <- lockResult{l, err, time.Now()}
	}()
	waitFor(t, 5*time.Second, "the reader to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 2 })
	select {
	case r := <-rch:
		t.Fatalf("reader behind a waiting writer was granted: %v", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	cancelled := time.Now()
	wcancel()
	if r := <-wch; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled writer: %v, want context.Canceled", r.err)
	}
	r := awaitLock(t, rch, 2*time.Second, "reader after the writer gave up")
	t.Logf("reader granted %v after the writer gave up", r.at.Sub(cancelled))
	if d := r.at.Sub(cancelled); d > time.Second {
		t.Errorf("reader granted %v after the writer gave up: its entry held it back", d)
	}
	if n := admin.ZCard(ctx, k.queue).Val(); n != 0 {
		t.Errorf("%d queue entries left", n)
	}
	r.l.Unlock(ctx)
}

// TestReaderLoss: a reader's hold deleted on the server (as an operator
// would) ends its lease: Done closes and Err matches ErrLockLost, and a
// writer gets in.
func TestReaderLoss(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	admin := adminClient(t, addr)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	a := newClient(t, adminClient(t, addr), dlock.WithTTL(2*time.Second))
	r, err := a.RWMutex(name).RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Del(ctx, k.shared).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("reader's Done still open 3s after its hold was deleted (TTL 2s)")
	}
	if !errors.Is(r.Err(), dlock.ErrLockLost) {
		t.Errorf("Err = %v, want ErrLockLost", r.Err())
	}
	w, err := a.RWMutex(name).TryLock(ctx)
	if err != nil {
		t.Fatalf("writer after the reader's loss: %v", err)
	}
	w.Unlock(ctx)
}

// TestCrashedReaderExpires: a reader whose client dies without releasing
// (its go-redis client closed) keeps the writer out until its TTL runs out
// on the server's clock, and not much longer.
func TestCrashedReaderExpires(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	const ttl = 2 * time.Second
	rdb := adminClient(t, addr)
	a := newClient(t, rdb, dlock.WithTTL(ttl))
	w := newClient(t, adminClient(t, addr), dlock.WithTTL(ttl))
	if _, err := a.RWMutex(name).RLock(ctx); err != nil {
		t.Fatal(err)
	}
	rdb.Close() // the crash: nothing renews or releases the reader now
	crashed := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := w.RWMutex(name).Lock(wctx)
	if err != nil {
		t.Fatalf("writer after a crashed reader: %v", err)
	}
	got := time.Since(crashed)
	t.Logf("writer granted %v after the reader's crash (TTL %v)", got, ttl)
	if got > ttl+time.Second {
		t.Errorf("writer granted %v after the crash, want within TTL %v + 1s", got, ttl)
	}
	l.Unlock(ctx)
}
