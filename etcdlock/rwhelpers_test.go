package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
)

// Helpers of the read-write lock and semaphore tests.

// newLockClient is a dlock client on a driver of its own over cli, closed at
// cleanup.
func newLockClient(tb testing.TB, cli *clientv3.Client, opts ...dlock.Option) *dlock.Client {
	tb.Helper()
	c, err := New(cli, &Options{Prefix: "dlocktest"}, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// waitQueued waits, by watching name's range, until it has at least n keys.
func waitQueued(t *testing.T, ctx context.Context, admin *clientv3.Client, name string, n int) {
	t.Helper()
	pfx := (&Driver{root: "dlocktest/"}).namePrefix(name)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	wch := admin.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-wch // created: a put from now on is an event
	for {
		resp, err := admin.Get(wctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count >= int64(n) {
			return
		}
		select {
		case <-wch:
		case <-wctx.Done():
			t.Fatalf("%q has %d keys after 10 s, want %d", name, resp.Count, n)
		}
	}
}

// grants checks every grant of one name against the leases granted before
// it that are still held: a writer's against any, a reader's against
// writers, a permit's against the count of permits. A lease whose Done has
// closed does not count: its loss was signalled.
type grants struct {
	mu        sync.Mutex
	limit     int // for permits; 0 for a read-write lock
	held      map[*dlock.Lease]bool
	maxTok    uint64 // the highest token granted so far
	maxWriter uint64 // the highest writer token granted so far
	peak      int
	n         int
	errs      []error
}

func newGrants(limit int) *grants { return &grants{limit: limit, held: map[*dlock.Lease]bool{}} }

func (g *grants) grant(l *dlock.Lease, shared bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	live := 0
	for o, oshared := range g.held {
		select {
		case <-o.Done():
			continue
		default:
		}
		live++
		if g.limit == 0 && !(shared && oshared) {
			g.errs = append(g.errs, fmt.Errorf("token %d (shared %v) granted while %d (shared %v) is held", l.Token(), shared, o.Token(), oshared))
		}
	}
	if g.limit > 0 && live >= g.limit {
		g.errs = append(g.errs, fmt.Errorf("permit %d granted while %d permits of %d are held", l.Token(), live, g.limit))
	}
	// Tokens: a writer's (a mutex's) exceeds every token granted before
	// it; a reader's every writer's before it. Readers let in by one delete
	// are granted at one engine revision, and return in any order; so are
	// permits freed by one delete, or taken at once by concurrent Acquires.
	if g.limit > 0 {
		shared = true
	}
	if !shared && l.Token() <= g.maxTok || shared && l.Token() <= g.maxWriter {
		g.errs = append(g.errs, fmt.Errorf("token %d (shared %v) granted after %d (writers' %d)", l.Token(), shared, g.maxTok, g.maxWriter))
	}
	g.maxTok = max(g.maxTok, l.Token())
	if !shared {
		g.maxWriter = max(g.maxWriter, l.Token())
	}
	g.held[l] = shared
	g.peak = max(g.peak, live+1)
}

func (g *grants) release(l *dlock.Lease) {
	g.mu.Lock()
	delete(g.held, l)
	g.mu.Unlock()
}

func (g *grants) check(t *testing.T) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := errors.Join(g.errs...); err != nil {
		t.Error(err)
	}
}

// within waits for ch's value for at most d.
func within[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: nothing within %v", what, d)
	}
	panic("unreachable")
}
