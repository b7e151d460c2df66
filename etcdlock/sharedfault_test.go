package etcdlock

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestSharedWaitAcrossWatchOutage: a reader behind a writer, and a permit
// behind a full semaphore, whose watch stream is down while the holder
// leaves, are let in once it is back: the deletion they missed is caught
// up (clientv3 resumes the watch, or the waiter's re-read after a new
// watch sees it), and no one else was let in meanwhile.
func TestSharedWaitAcrossWatchOutage(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	type acquireFn = func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error)
	for _, tc := range []struct {
		kind          string
		holder, waits acquireFn
	}{
		{"Reader", func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.RWMutex(name).Lock
		}, func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.RWMutex(name).RLock
		}},
		{"Permit", func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.Semaphore(name, 1).Acquire
		}, func(c *dlock.Client, name string) func(context.Context) (*dlock.Lease, error) {
			return c.Semaphore(name, 1).Acquire
		}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			name := benchName(t)
			a := newLockClient(t, admin)
			cb := newConn(t, eps)
			b := newLockClient(t, cb.cli)
			h, err := tc.holder(a, name)(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan *dlock.Lease, 1)
			go func() {
				l, err := tc.waits(b, name)(ctx)
				if err != nil {
					t.Error(err)
				}
				got <- l
			}()
			waitQueued(t, ctx, admin, name, 2)
			undo, err := cb.fault("watch", drivertest.Fault{Down: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case l := <-got:
				// Its watch may have been set up before the fault took hold:
				// then nothing was missed.
				t.Logf("waiter granted while its watch stream was down (token %d)", l.Token())
				undo()
				l.Unlock(ctx)
				return
			case <-time.After(time.Second):
			}
			healed := time.Now()
			undo()
			l := within(t, got, 10*time.Second, "waiter after its watch stream came back")
			t.Logf("waiter granted %v after its watch stream came back", time.Since(healed))
			if l.Token() <= h.Token() {
				t.Errorf("waiter's token %d, holder's %d", l.Token(), h.Token())
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
