package redislock

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// Semaphores on a single node (scripts/single.lua), through the portable
// API, each client on a go-redis client of its own.

// TestSemaphoreInvariants: workers of four clients take permits of one
// semaphore over and over: never more than n hold (each grant checked
// against every live lease), tokens unique, and the permits are used.
func TestSemaphoreInvariants(t *testing.T) {
	addr := testserver.Redis(t)[0]
	name := uniqueName(t)
	const n = 3
	var cs []*dlock.Client
	for range 4 {
		cs = append(cs, newClient(t, adminClient(t, addr), dlock.WithTTL(5*time.Second)))
	}
	h := newHolders(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	most := 0
	var mu sync.Mutex
	live := 0
	for i := range 12 {
		sem := cs[i%len(cs)].Semaphore(name, n)
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				l, err := sem.Acquire(ctx)
				if err != nil {
					t.Errorf("Acquire: %v", err)
					return
				}
				h.granted(l, false)
				mu.Lock()
				live++
				most = max(most, live)
				mu.Unlock()
				time.Sleep(time.Duration(rand.N(10)) * time.Millisecond)
				mu.Lock()
				live--
				mu.Unlock()
				h.releasing(l)
				if err := l.Unlock(ctx); err != nil {
					t.Errorf("Unlock (token %d): %v", l.Token(), err)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d grants, at most %d of %d permits held at once", h.grants, most, n)
	if most < 2 {
		t.Errorf("at most %d permit(s) held at once: the permits are not shared", most)
	}
}

// TestSemaphoreMismatch: a semaphore held with one limit refuses another
// limit and the locks of its name, naming both limits; a lock refuses a
// semaphore; a semaphore only awaited (its holders gone, a waiter queued)
// still refuses another limit.
func TestSemaphoreMismatch(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	a := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))
	b := newClient(t, adminClient(t, addr), dlock.WithTTL(10*time.Second))

	la, err := a.Semaphore(name, 2).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for what, tc := range map[string]struct {
		try  func(context.Context) (*dlock.Lease, error)
		want []string
	}{
		"Semaphore(name, 5).Acquire": {b.Semaphore(name, 5).Acquire, []string{"Limit = 5", "want 2", "semaphore of 2 permits"}},
		"Mutex(name).Lock":           {b.Mutex(name).Lock, []string{"Limit = 0", "want 2"}},
		"RWMutex(name).RLock":        {b.RWMutex(name).RLock, []string{"Limit = 0", "want 2"}},
	} {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		l, err := tc.try(tctx)
		cancel()
		if l != nil {
			l.Unlock(ctx)
		}
		if !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("%s beside a semaphore of 2: %v, want ErrInvalidArgument", what, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", what, err, w)
			}
		}
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	lm, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Semaphore(name, 4).TryAcquire(ctx)
	if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), "Limit = 4") || !strings.Contains(err.Error(), "want 0") {
		t.Errorf("Semaphore(name, 4) beside a lock: %v, want ErrInvalidArgument naming 4 and 0", err)
	}
	if err := lm.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// Awaited only: one permit held, a waiter queued, then the holder's
	// hold deleted: the waiter's entry still says what the name is.
	admin := adminClient(t, addr)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	l1, err := a.Semaphore(name, 1).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := make(chan lockResult, 1)
	go func() {
		l, err := b.Semaphore(name, 1).Acquire(wctx)
		wch <- lockResult{l, err, time.Now()}
	}()
	waitFor(t, 5*time.Second, "the waiter to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 1 })
	if err := admin.Del(ctx, k.shared, k.tokens).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Mutex.TryLock on a semaphore awaited with 1 permit: %v, want ErrInvalidArgument", err)
	}
	wcancel()
	if r := <-wch; r.err == nil {
		r.l.Unlock(ctx)
	}
	l1.Unlock(ctx)
}

// TestCrashedPermitExpires: permits of a client that dies without
// releasing (its go-redis client closed) come back when their TTL runs out
// on the server's clock, to a waiter that queued for them.
func TestCrashedPermitExpires(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	const ttl = 2 * time.Second
	rdb := adminClient(t, addr)
	a := newClient(t, rdb, dlock.WithTTL(ttl))
	w := newClient(t, adminClient(t, addr), dlock.WithTTL(ttl))
	for range 2 {
		if _, err := a.Semaphore(name, 2).Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ch := make(chan lockResult, 2)
	for range 2 {
		go func() {
			l, err := w.Semaphore(name, 2).Acquire(wctx)
			ch <- lockResult{l, err, time.Now()}
		}()
	}
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	admin := adminClient(t, addr)
	waitFor(t, 5*time.Second, "both waiters to queue", func() bool { return admin.ZCard(ctx, k.queue).Val() == 2 })
	rdb.Close() // the crash: nothing renews or releases the permits now
	crashed := time.Now()
	for range 2 {
		r := awaitLock(t, ch, ttl+5*time.Second, "Acquire after the holder's crash")
		got := r.at.Sub(crashed)
		t.Logf("permit granted %v after the holder's crash (TTL %v)", got, ttl)
		if got > ttl+time.Second {
			t.Errorf("permit granted %v after the crash, want within TTL %v + 1s", got, ttl)
		}
		defer r.l.Unlock(ctx)
	}
}

// TestPermitLossAndStatus: Status counts the permits in use and the
// limit; a permit deleted on the server ends its lease.
func TestPermitLossAndStatus(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	a := newClient(t, adminClient(t, addr), dlock.WithTTL(2*time.Second))
	var ls []*dlock.Lease
	for range 2 {
		l, err := a.Semaphore(name, 3).Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	st, err := a.Status(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Held || st.Holders != 2 || st.Limit != 3 || st.Mode != driver.Exclusive || st.Token != ls[1].Token() || st.TTLLeft <= 0 {
		t.Errorf("Status with 2 of 3 permits = %+v, want Held, 2 holders, Limit 3, Token %d", st, ls[1].Token())
	}
	admin := adminClient(t, addr)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	if err := admin.ZRem(ctx, k.shared, ls[0].Driver().(*singleLock).owner).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ls[0].Done():
	case <-time.After(3 * time.Second):
		t.Fatal("permit's Done still open 3s after its hold was deleted (TTL 2s)")
	}
	if !errors.Is(ls[0].Err(), dlock.ErrLockLost) {
		t.Errorf("Err = %v, want ErrLockLost", ls[0].Err())
	}
	select {
	case <-ls[1].Done():
		t.Errorf("the other permit's lease ended too: %v", ls[1].Err())
	default:
	}
	if err := ls[1].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
