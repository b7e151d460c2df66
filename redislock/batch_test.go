package redislock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestBatchedRenewal: Renew calls queued while batches are in flight go
// out together in one script per node, and each entry is owner-checked on
// its own: a lock whose key was
// deleted (single node) or taken by someone else is reported lost, the
// others — exclusive, with a value, readers, permits — are extended. Both
// topologies.
func TestBatchedRenewal(t *testing.T) {
	addrs := testserver.Redis(t)
	for _, tc := range []struct {
		name  string
		addrs []string
	}{{"single", addrs[:1]}, {"redlock", addrs[:3]}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			count := &commandCounter{}
			var nodes []redis.UniversalClient
			for _, a := range tc.addrs {
				c := redis.NewClient(&redis.Options{Addr: a})
				c.AddHook(count)
				t.Cleanup(func() { c.Close() })
				nodes = append(nodes, c)
			}
			var d *Driver
			var err error
			if len(nodes) == 1 {
				d, err = NewDriver(nodes[0], nil)
			} else {
				d, err = NewRedlockDriver(nodes, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if !d.CoalescesRenewals() {
				t.Fatal("CoalescesRenewals = false on plain go-redis clients")
			}
			const n, ttl = 200, 10 * time.Second
			prefix := uniqueName(t)
			var locks []driver.Lock
			reqs := make([]driver.Request, n)
			for i := range reqs {
				reqs[i] = driver.Request{Name: fmt.Sprintf("%s/%d", prefix, i), TTL: ttl}
				if len(nodes) == 1 {
					switch i % 4 {
					case 1:
						reqs[i].Value = "leader"
					case 2:
						reqs[i].Mode = driver.Shared
					case 3:
						reqs[i].Limit = 3
					}
				}
			}
			for _, r := range reqs {
				l, _, err := d.Acquire(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				locks = append(locks, l)
			}
			// Lost: one exclusive lock's key deleted everywhere, one reader's
			// hold removed, one reader's holders replaced by a key of another
			// type (which must not fail the rest of its batch).
			lostX, lostS, lostW := 4, 6, 10
			var admins []*redis.Client
			for _, a := range tc.addrs {
				admins = append(admins, adminClient(t, a))
			}
			admin := admins[0]
			for _, a := range admins {
				if err := a.Del(ctx, d.keysOf(reqs[lostX].Name).lock).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if len(nodes) == 1 {
				if err := admin.Del(ctx, d.keysOf(reqs[lostS].Name).shared).Err(); err != nil {
					t.Fatal(err)
				}
				if err := admin.Set(ctx, d.keysOf(reqs[lostW].Name).shared, "not a sorted set", time.Minute).Err(); err != nil {
					t.Fatal(err)
				}
			} else {
				lostS, lostW = -1, -1
			}
			// Shorten every live key, so that the renewal shows.
			for _, a := range admins {
				if _, err := a.Pipelined(ctx, func(p redis.Pipeliner) error {
					for i := range reqs {
						k := d.keysOf(reqs[i].Name)
						p.PExpire(ctx, k.lock, 4*time.Second)
						p.PExpire(ctx, k.value, 4*time.Second)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			// Every node's batcher looks busy (as with batches in flight)
			// until all n renewals have queued; then one sender starts, as
			// the end of a batch in flight would let it.
			for _, nd := range d.nodes {
				nd.batch.mu.Lock()
				nd.batch.inflight = maxInflight
				nd.batch.mu.Unlock()
			}
			before := count.n.Load()
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i, l := range locks {
				wg.Go(func() {
					_, errs[i] = l.Renew(ctx)
				})
			}
			for _, nd := range d.nodes {
				b := nd.batch
				waitFor(t, 10*time.Second, "every renewal queued", func() bool {
					b.mu.Lock()
					defer b.mu.Unlock()
					return len(b.pending) == n
				})
				b.mu.Lock()
				b.inflight = 1
				b.mu.Unlock()
				d.bg.Go(func() { b.send(ctx) })
			}
			wg.Wait()
			sent := count.n.Load() - before
			t.Logf("%d renewals on %d nodes: %d commands sent", n, len(nodes), sent)
			if sent != int64(len(nodes)) {
				t.Errorf("%d renewals queued together sent %d commands, want one script per node", n, sent)
			}
			for i, err := range errs {
				switch {
				case i == lostX || i == lostS || i == lostW:
					if !errors.Is(err, driver.ErrLockLost) {
						t.Errorf("Renew of lost lock %d: %v, want ErrLockLost", i, err)
					}
				case err != nil:
					t.Errorf("Renew of lock %d: %v", i, err)
				case reqs[i].Mode == driver.Exclusive && reqs[i].Limit == 0:
					if pttl := admin.PTTL(ctx, d.keysOf(reqs[i].Name).lock).Val(); pttl < 6*time.Second {
						t.Errorf("lock %d's key has %v left after its renewal, want about %v", i, pttl, ttl)
					}
					if reqs[i].Value != "" {
						if pttl := admin.PTTL(ctx, d.keysOf(reqs[i].Name).value).Val(); pttl < 6*time.Second {
							t.Errorf("lock %d's value has %v left after its renewal, want about %v", i, pttl, ttl)
						}
					}
				}
			}
			for i, l := range locks {
				if err := l.Release(ctx); err != nil && i != lostX && i != lostS && i != lostW {
					t.Errorf("Release %d: %v", i, err)
				}
			}
		})
	}
}
