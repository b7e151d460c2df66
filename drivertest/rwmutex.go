package drivertest

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// The read-write lock suite: run when the driver offers Shared.

// testReadersShare: readers hold together; a writer (or a Mutex of the
// same name) does not get in while they do, and gets in after them with a
// larger token.
func testReadersShare(t *testing.T, s *suite) {
	a, _ := s.client(t)
	s.needs(t, a, true, false)
	b, _ := s.client(t)
	w, _ := s.client(t)
	name := lockName(t)
	ra := s.take(t, "RLock a", a.RWMutex(name).RLock)
	rb := s.take(t, "RLock b while a reads", b.RWMutex(name).RLock)
	l, err := w.RWMutex(name).TryLock(s.ctx)
	mustNotAcquire(t, "TryLock while two read", l, err)
	l, err = w.Mutex(name).TryLock(s.ctx)
	mustNotAcquire(t, "Mutex.TryLock while two read", l, err)
	if rb.Token() <= ra.Token() {
		t.Errorf("reader tokens %d then %d, want increasing", ra.Token(), rb.Token())
	}
	ch := async(s.ctx, w.RWMutex(name).Lock)
	unlock(t, ra)
	stillWaiting(t, ch, "writer while one reader is left")
	unlock(t, rb)
	lw := granted(t, ch, "writer after the readers")
	if lw.Token() <= rb.Token() {
		t.Errorf("writer token %d after reader token %d", lw.Token(), rb.Token())
	}
	mustHold(t, lw)
	unlock(t, lw)
}

// testWriterExcludesReaders: while a writer holds, readers wait; they are
// all let in together when it leaves.
func testWriterExcludesReaders(t *testing.T, s *suite) {
	w, _ := s.client(t)
	s.needs(t, w, true, false)
	a, _ := s.client(t)
	b, _ := s.client(t)
	name := lockName(t)
	lw := s.take(t, "Lock", w.RWMutex(name).Lock)
	l, err := a.RWMutex(name).TryRLock(s.ctx)
	mustNotAcquire(t, "TryRLock while a writer holds", l, err)
	cha := async(s.ctx, a.RWMutex(name).RLock)
	chb := async(s.ctx, b.RWMutex(name).RLock)
	waitQueued(t, w, name, 2)
	stillWaiting(t, cha, "reader a while the writer holds")
	stillWaiting(t, chb, "reader b while the writer holds")
	unlock(t, lw)
	ra := granted(t, cha, "reader a after the writer")
	rb := granted(t, chb, "reader b after the writer")
	for _, r := range []*dlock.Lease{ra, rb} {
		mustHold(t, r)
		if r.Token() <= lw.Token() {
			t.Errorf("reader token %d after writer token %d", r.Token(), lw.Token())
		}
	}
	unlock(t, ra)
	unlock(t, rb)
}

// testNoWriterStarvation: once a writer waits, a reader that comes after it
// queues behind it even though only readers hold.
func testNoWriterStarvation(t *testing.T, s *suite) {
	r1c, _ := s.client(t)
	s.needs(t, r1c, true, false)
	wc, _ := s.client(t)
	r2c, _ := s.client(t)
	name := lockName(t)
	r1 := s.take(t, "RLock", r1c.RWMutex(name).RLock)
	chw := async(s.ctx, wc.RWMutex(name).Lock)
	waitQueued(t, r1c, name, 1)
	l, err := r2c.RWMutex(name).TryRLock(s.ctx)
	mustNotAcquire(t, "TryRLock behind a waiting writer", l, err)
	chr := async(s.ctx, r2c.RWMutex(name).RLock)
	waitQueued(t, r1c, name, 2)
	stillWaiting(t, chr, "reader behind a waiting writer")
	unlock(t, r1)
	lw := granted(t, chw, "writer after the first reader")
	stillWaiting(t, chr, "reader while the writer holds")
	unlock(t, lw)
	r2 := granted(t, chr, "reader after the writer")
	if !(r1.Token() < lw.Token() && lw.Token() < r2.Token()) {
		t.Errorf("tokens reader %d, writer %d, reader %d: want the grant order", r1.Token(), lw.Token(), r2.Token())
	}
	unlock(t, r2)
}

// testCancelledWriterFreesReaders: a writer that gives up its wait must not
// leave behind anything that keeps later readers out.
func testCancelledWriterFreesReaders(t *testing.T, s *suite) {
	r1c, _ := s.client(t)
	s.needs(t, r1c, true, false)
	wc, _ := s.client(t)
	r2c, _ := s.client(t)
	name := lockName(t)
	r1 := s.take(t, "RLock", r1c.RWMutex(name).RLock)
	wctx, wcancel := context.WithCancel(s.ctx)
	chw := async(wctx, wc.RWMutex(name).Lock)
	waitQueued(t, r1c, name, 1)
	chr := async(s.ctx, r2c.RWMutex(name).RLock)
	waitQueued(t, r1c, name, 2)
	wcancel()
	if r := await(t, chw, 5*time.Second, "cancelled writer"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled writer = %v, want context.Canceled", r.err)
	}
	r2 := granted(t, chr, "reader after the writer ahead of it gave up")
	mustHold(t, r1)
	mustHold(t, r2)
	unlock(t, r1)
	unlock(t, r2)
}

// testRWExclusion: readers and writers of several clients take the lock
// over and over; never a reader with a writer, never two writers, and a
// writer's token is above every token granted before it.
func testRWExclusion(t *testing.T, s *suite) {
	c0, _ := s.client(t)
	s.needs(t, c0, true, false)
	name := lockName(t)
	clients := []*dlock.Client{c0}
	for range 2 {
		c, _ := s.client(t)
		clients = append(clients, c)
	}
	const workers, rounds = 6, 8
	var (
		mu               sync.Mutex
		readers, writers int
		maxToken         uint64
		maxReaders       int
		failed           atomic.Bool
	)
	var wg sync.WaitGroup
	for i := range workers {
		rw := clients[i%len(clients)].RWMutex(name)
		wg.Go(func() {
			for range rounds {
				write := rand.IntN(3) == 0
				acquire := rw.RLock
				if write {
					acquire = rw.Lock
				}
				l, err := acquire(s.ctx)
				if err != nil {
					t.Errorf("acquire (write=%v): %v", write, err)
					failed.Store(true)
					return
				}
				mu.Lock()
				if write {
					writers++
					if l.Token() <= maxToken {
						t.Errorf("writer token %d not above %d, granted before it", l.Token(), maxToken)
					}
				} else {
					readers++
					maxReaders = max(maxReaders, readers)
				}
				if writers > 1 || (writers == 1 && readers > 0) {
					t.Errorf("%d writers and %d readers hold at once", writers, readers)
				}
				maxToken = max(maxToken, l.Token())
				mu.Unlock()
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
				mu.Lock()
				if write {
					writers--
				} else {
					readers--
				}
				mu.Unlock()
				if err := l.Unlock(context.Background()); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if !failed.Load() {
		t.Logf("%d workers × %d rounds; at most %d readers at once", workers, rounds, maxReaders)
	}
}

// testReaderLoss: a reader's lease learns when the engine drops it.
func testReaderLoss(t *testing.T, s *suite) {
	lf, ok := s.h.(LossForcer)
	if !ok {
		t.Skip("harness cannot make the engine drop a lock (no LossForcer)")
	}
	c, _ := s.client(t)
	s.needs(t, c, true, false)
	name := lockName(t)
	r := s.take(t, "RLock", c.RWMutex(name).RLock)
	if err := lf.ForceLoss(s.ctx, name); err != nil {
		t.Fatalf("ForceLoss: %v", err)
	}
	mustBeDone(t, r, 10*time.Second, dlock.ErrLockLost)
}

// testVanishedReader: a reader cut off from the engine keeps a writer out
// for its TTL at most, and its lease has ended before the writer gets in.
func testVanishedReader(t *testing.T, s *suite) {
	cr, ok := s.h.(Crasher)
	if !ok {
		t.Skip("harness cannot cut a client off (no Crasher)")
	}
	ttl := s.shortTTL()
	a, da := s.client(t, dlock.WithTTL(ttl))
	s.needs(t, a, true, false)
	w, _ := s.client(t, dlock.WithTTL(ttl))
	name := lockName(t)
	ra := s.take(t, "RLock", a.RWMutex(name).RLock)
	ch := async(s.ctx, w.RWMutex(name).Lock)
	waitQueued(t, w, name, 1)
	next := s.afterCrash(t, cr, da, ra, ch, ttl, "writer after the reader vanished")
	unlock(t, next)
}
