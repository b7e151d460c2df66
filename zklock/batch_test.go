package zklock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// Renewals in flight together share their proof: n concurrent Renews go
// in a few rounds, not n; a node deleted under a lock fails that lock's
// renewal alone, as ErrLockLost, and the others of its multi renew. The
// same for releases.
func TestBatchedRenewalsAndReleases(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx := context.Background()
	d, err := dialDriver(ctx, servers, Options{Prefix: testRoot, SessionTimeout: testSession}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	const n = 200
	prefix := "renew-share/" + newGUID()
	locks := make([]*zkLock, n)
	for i := range locks {
		l, _, err := d.Acquire(ctx, driver.Request{Name: fmt.Sprintf("%s/%d", prefix, i), TTL: testSession})
		if err != nil {
			t.Fatal(err)
		}
		locks[i] = l.(*zkLock)
	}
	admin, err := adminConn(servers)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	const victim = n / 2

	// Hold the rounds in flight until every caller has joined, so that the
	// count does not depend on how the scheduler spreads the callers'
	// starts: the first maxInFlight rounds go (each with whoever had
	// joined), every later caller gathers in the next one.
	var sizes []int // of the rounds, in the order sent
	gate := func(b *batcher, callers int) func(bool, int) {
		var mu sync.Mutex
		sent := 0
		return func(_ bool, nodes int) {
			mu.Lock()
			sizes = append(sizes, nodes)
			sent += nodes
			mu.Unlock()
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				b.mu.Lock()
				waiting := 0
				if b.next != nil {
					waiting = len(b.next.paths)
				}
				b.mu.Unlock()
				mu.Lock()
				all := sent+waiting >= callers
				mu.Unlock()
				if all {
					return
				}
				time.Sleep(time.Millisecond) // no event says a caller joined
			}
		}
	}
	const wantRounds = maxInFlight + 1
	defer roundGate.Store(nil)
	all := func(what string, ls []*zkLock, counter *atomic.Int64, b *batcher, op func(l *zkLock) error) []error {
		t.Helper()
		if b != nil {
			g := gate(b, len(ls))
			roundGate.Store(&g)
			defer roundGate.Store(nil)
		}
		sizes = nil
		rounds := counter.Load()
		errs := make([]error, len(ls))
		var wg sync.WaitGroup
		for i, l := range ls {
			wg.Go(func() { errs[i] = op(l) })
		}
		wg.Wait()
		rounds = counter.Load() - rounds
		t.Logf("%d concurrent %s went in %d rounds of %v nodes", len(ls), what, rounds, sizes)
		if b != nil && rounds > wantRounds {
			t.Errorf("%d concurrent %s went in %d rounds; want at most %d", len(ls), what, rounds, wantRounds)
		}
		return errs
	}
	renew := func(l *zkLock) error { _, err := l.Renew(ctx); return err }
	release := func(l *zkLock) error { return l.Release(ctx) }

	// n renewals in flight together share a few rounds.
	for i, err := range all("renewals", locks, &renewRounds, &d.renew, renew) {
		if err != nil {
			t.Errorf("Renew of lock %d: %v", i, err)
		}
	}
	// A node deleted under a lock fails that lock's renewal alone.
	if err := admin.Delete(locks[victim].path, -1); err != nil {
		t.Fatal(err)
	}
	for i, err := range all("renewals, one node gone", locks, &renewRounds, nil, renew) {
		switch {
		case i == victim && !errors.Is(err, driver.ErrLockLost):
			t.Errorf("Renew of the lock whose node was deleted: %v; want ErrLockLost", err)
		case i != victim && err != nil:
			t.Errorf("Renew of lock %d: %v", i, err)
		}
	}
	// Releases: the victim's reports the loss; the others, in flight
	// together, share a few multis of deletes.
	if err := locks[victim].Release(ctx); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("Release of the lock whose node was deleted: %v; want ErrLockLost", err)
	}
	others := append(slices.Clone(locks[:victim]), locks[victim+1:]...)
	for i, err := range all("releases", others, &releaseRounds, &d.release, release) {
		if err != nil {
			t.Errorf("Release of lock %s: %v", others[i].path, err)
		}
	}
	for i, l := range locks {
		if ok, _, err := admin.Exists(l.path); err != nil || ok {
			t.Errorf("node %d after its release: exists %v, %v", i, ok, err)
		}
	}
}
