package zklock

import (
	"context"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// A held lock whose node is deleted is reported lost by a call
// (driver.LossNotifier), whether the driver sees the watch events (Dial's
// callback, New's event channel) or not (New without one: the lock reads
// its own watch); the other locks of the session stay held.
func TestNodeDeletedReportsLoss(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	for _, tc := range []struct {
		name   string
		events bool
	}{{"dial", true}, {"new-events", true}, {"new-no-events", false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			var d *Driver
			var err error
			if tc.name == "dial" {
				d, err = dialDriver(ctx, servers, Options{Prefix: testRoot, SessionTimeout: testSession}, false)
			} else {
				conn, events, cerr := zk.Connect(servers, testSession, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
				if cerr != nil {
					t.Fatal(cerr)
				}
				t.Cleanup(conn.Close)
				if !tc.events {
					// The driver learns the session timeout from the
					// connection's server: wait for the session first.
					for ev := range events {
						if ev.State == zk.StateHasSession {
							break
						}
					}
					events = nil
				}
				d, err = NewDriver(conn, events, &Options{Prefix: testRoot, SessionTimeout: testSession})
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			if d.nodeEvents != tc.events {
				t.Fatalf("nodeEvents = %v; want %v", d.nodeEvents, tc.events)
			}
			prefix := "node-deleted/" + newGUID()
			acquire := func(name string) *zkLock {
				l, _, err := d.Acquire(ctx, driver.Request{Name: prefix + "/" + name, TTL: testSession})
				if err != nil {
					t.Fatal(err)
				}
				return l.(*zkLock)
			}
			victim, other := acquire("victim"), acquire("other")
			lost, otherLost := make(chan struct{}), make(chan struct{})
			victim.NotifyLost(func() { close(lost) })
			other.NotifyLost(func() { close(otherLost) })

			admin, err := adminConn(servers)
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			if err := admin.Delete(victim.path, -1); err != nil {
				t.Fatal(err)
			}
			select {
			case <-lost:
			case <-time.After(testSession):
				t.Fatal("the lock whose node was deleted was not reported lost")
			}
			select {
			case <-victim.Lost():
			default:
				t.Error("NotifyLost's callback ran but Lost() is open")
			}
			if err := other.Release(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-otherLost:
				t.Error("the other lock was reported lost")
			default:
			}
		})
	}
}

// A lock granted after its session ended is reported lost at once, by the
// callback given to NotifyLost after the fact.
func TestNotifyLostAfterLoss(t *testing.T) {
	s := newSession(1)
	l := &zkLock{sess: s}
	s.end()
	s.add(l)
	called := 0
	l.NotifyLost(func() { called++ })
	l.markLost()
	if called != 1 {
		t.Fatalf("NotifyLost's callback ran %d times; want once", called)
	}
}
