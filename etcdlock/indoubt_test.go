package etcdlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestReleaseInDoubt: a release whose delete reached etcd but whose reply
// was lost to a reset is sent again and finds the key gone. With the
// lock's lease still alive that is our own delete (nil); with the lease
// gone as well (revoked here, as its expiry would) nothing tells our delete
// from the expiry, and Release says the outcome is unknown — matching
// ErrLockLost, never a false nil.
func TestReleaseInDoubt(t *testing.T) {
	eps := testserver.Etcd(t)
	admin := newClient(t, eps)
	for _, tc := range []struct {
		name      string
		leaseGone bool
	}{{"LeaseAlive", false}, {"LeaseGone", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := newConn(t, eps)
			d, err := NewDriver(c.cli, &Options{Prefix: "dlocktest"})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			dl, _, err := d.Acquire(ctx, driver.Request{Name: benchName(t), TTL: 30 * time.Second, Wait: true})
			if err != nil {
				t.Fatal(err)
			}
			l := dl.(*lock)
			deleted := admin.Watch(ctx, l.key, clientv3.WithRev(l.rev))
			undo, err := c.fault("", drivertest.Fault{Stall: true, Dir: drivertest.ToClient})
			if err != nil {
				t.Fatal(err)
			}
			defer undo()
			released := make(chan error, 1)
			go func() { released <- l.Release(ctx) }()
			awaitDelete(t, deleted) // the delete reached etcd; its reply is held
			if tc.leaseGone {
				if _, err := admin.Revoke(ctx, l.ls.id); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.fault("", drivertest.Fault{Reset: true}); err != nil {
				t.Fatal(err)
			}
			undo()
			var rerr error
			select {
			case rerr = <-released:
			case <-time.After(releaseTimeout + 5*time.Second):
				t.Fatal("Release still running after the reset")
			}
			t.Logf("Release: %v", rerr)
			switch {
			case !tc.leaseGone && rerr != nil:
				t.Fatalf("Release whose delete went through, lease alive = %v, want nil", rerr)
			case tc.leaseGone && !(errors.Is(rerr, driver.ErrLockLost) && errors.Is(rerr, errOutcomeUnknown)):
				t.Fatalf("Release whose delete went through, lease gone since = %v, want the outcome unknown (matching ErrLockLost)", rerr)
			}
		})
	}
}

// awaitDelete waits for a DELETE event on the watch.
func awaitDelete(t *testing.T, wch clientv3.WatchChan) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatal("watch ended before the key's deletion")
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return
				}
			}
		case <-timeout:
			t.Fatal("the release's delete did not reach etcd within 10 s")
		}
	}
}
