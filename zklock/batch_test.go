package zklock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

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
	if err := admin.Delete(locks[victim].path, -1); err != nil {
		t.Fatal(err)
	}

	rounds := renewRounds.Load()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, l := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = l.Renew(ctx)
		}()
	}
	wg.Wait()
	rounds = renewRounds.Load() - rounds
	t.Logf("%d concurrent renewals went in %d rounds", n, rounds)
	if rounds > 8 {
		t.Errorf("%d concurrent renewals went in %d rounds; want them to share a few", n, rounds)
	}
	for i, err := range errs {
		switch {
		case i == victim && !errors.Is(err, driver.ErrLockLost):
			t.Errorf("Renew of the lock whose node was deleted: %v; want ErrLockLost", err)
		case i != victim && err != nil:
			t.Errorf("Renew of lock %d: %v", i, err)
		}
	}
	// Releases in flight together share a multi of deletes too; the
	// victim's node is gone, its Release reports the loss, the others
	// release.
	rounds = releaseRounds.Load()
	for i, l := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Release(ctx)
		}()
	}
	wg.Wait()
	rounds = releaseRounds.Load() - rounds
	t.Logf("%d concurrent releases went in %d rounds", n, rounds)
	if rounds > 8 {
		t.Errorf("%d concurrent releases went in %d rounds; want them to share a few", n, rounds)
	}
	for i, err := range errs {
		switch {
		case i == victim && !errors.Is(err, driver.ErrLockLost):
			t.Errorf("Release of the lock whose node was deleted: %v; want ErrLockLost", err)
		case i != victim && err != nil:
			t.Errorf("Release of lock %d: %v", i, err)
		}
	}
	for i, l := range locks {
		if ok, _, err := admin.Exists(l.path); err != nil || ok {
			t.Errorf("node %d after its release: exists %v, %v", i, ok, err)
		}
	}
}
