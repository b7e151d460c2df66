package zklock

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// book checks the leases of a contention test as they are granted: a new
// grant against every lease still held (one not yet being unlocked whose
// Done is open), and its token against the leases unlocked before it was
// asked for.
type book struct {
	limit int // a semaphore's permits; 0: a read-write lock

	mu       sync.Mutex
	held     map[*dlock.Lease]bool // lease -> shared
	released uint64                // the highest token unlocked so far
	tokens   map[uint64]bool
	most     int // the most leases held at once
	grants   int
	errs     []string
}

func newBook(limit int) *book {
	return &book{limit: limit, held: map[*dlock.Lease]bool{}, tokens: map[uint64]bool{}}
}

// floor is what a grant asked for now must exceed.
func (b *book) floor() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.released
}

// granted records l (asked for when floor was the highest unlocked token).
func (b *book) granted(l *dlock.Lease, shared bool, floor uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.grants++
	if l.Token() <= floor {
		b.failf("token %d granted after token %d was unlocked", l.Token(), floor)
	}
	if b.tokens[l.Token()] {
		b.failf("token %d granted twice", l.Token())
	}
	b.tokens[l.Token()] = true
	live := 1
	for o, oShared := range b.held {
		select {
		case <-o.Done():
			continue
		default:
		}
		live++
		if b.limit == 0 && !(shared && oShared) {
			b.failf("%s token %d granted while %s token %d is held", mode(shared), l.Token(), mode(oShared), o.Token())
		}
	}
	if b.limit > 0 && live > b.limit {
		b.failf("permit token %d granted while %d others are held (limit %d)", l.Token(), live-1, b.limit)
	}
	b.most = max(b.most, live)
	b.held[l] = shared
}

// unlock stops counting l and unlocks it.
func (b *book) unlock(t testing.TB, l *dlock.Lease) {
	b.mu.Lock()
	delete(b.held, l)
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Unlock(ctx); err != nil {
		t.Errorf("unlock token %d: %v", l.Token(), err)
	}
	b.mu.Lock()
	b.released = max(b.released, l.Token())
	b.mu.Unlock()
}

func (b *book) failf(format string, args ...any) {
	if len(b.errs) < 10 {
		b.errs = append(b.errs, fmt.Sprintf(format, args...))
	}
}

func (b *book) check(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		t.Error(e)
	}
}

func mode(shared bool) string {
	if shared {
		return "reader"
	}
	return "writer"
}

// leaseResult is an asynchronous acquire's outcome.
type leaseResult struct {
	l   *dlock.Lease
	err error
}

// async runs acquire in a goroutine.
func async(acquire func() (*dlock.Lease, error)) <-chan leaseResult {
	ch := make(chan leaseResult, 1)
	go func() {
		l, err := acquire()
		ch <- leaseResult{l, err}
	}()
	return ch
}

// mustGet waits for an asynchronous acquire that must succeed.
func mustGet(t *testing.T, ch <-chan leaseResult, what string) *dlock.Lease {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		t.Cleanup(func() { r.l.Unlock(context.Background()) })
		return r.l
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: not granted within 15 s", what)
	}
	return nil
}

// notYet fails if an asynchronous acquire has returned.
func notYet(t *testing.T, ch <-chan leaseResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned (%v, token %d) while it should wait", what, r.err, tokenOf(r.l))
	default:
	}
}

func tokenOf(l *dlock.Lease) uint64 {
	if l == nil {
		return 0
	}
	return l.Token()
}

func unlock(t *testing.T, l *dlock.Lease) {
	t.Helper()
	if err := l.Unlock(context.Background()); err != nil {
		t.Fatalf("unlock token %d: %v", l.Token(), err)
	}
}
