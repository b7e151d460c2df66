package etcdlock

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestElectionChurnUnderCuts: four candidates campaign, lead a while and
// resign, over and over, while one of them at a time, the leader when
// there is one, is cut off from etcd (every connection reset and refused)
// for longer than the TTL. Every leadership granted is checked against every
// earlier one not yet ended (its Done not closed): never two leaders at
// once, and terms strictly increase.
func TestElectionChurnUnderCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for ~15 s")
	}
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := benchName(t)
	g := newGrants(0)
	const candidates, ttl = 4, 2 * time.Second
	var (
		wg     sync.WaitGroup
		stop   atomic.Bool
		failed atomic.Int64
		lost   atomic.Int64
		leader atomic.Int64 // 1 + the index of the candidate that leads, 0 if none
		cut    [candidates]atomic.Bool
		cutAt  [candidates]atomic.Int64 // when the cut began, unix ns
	)
	conns := make([]*conn, candidates)
	for i := range candidates {
		conns[i] = newConn(t, eps)
		c := newLockClient(t, conns[i].cli, dlock.WithTTL(ttl))
		wg.Go(func() {
			e := c.Election(name)
			for !stop.Load() {
				cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
				l, err := e.Campaign(cctx, fmt.Sprint(i))
				ccancel()
				if err != nil {
					failed.Add(1) // cut off, or not elected in time: campaign again
					continue
				}
				granted := time.Now()
				g.grant(l.Lease, false)
				leader.Store(int64(i + 1))
				select {
				case <-time.After(time.Duration(rand.N(600)) * time.Millisecond):
				case <-l.Done():
				}
				if cut[i].Load() {
					checked := time.Now()
					// A cut-off leader does not resign: it leads until its
					// Done closes, and no one else may lead before that.
					select {
					case <-l.Done():
					case <-time.After(ttl + time.Second):
						at := time.Unix(0, cutAt[i].Load())
						t.Errorf("candidate %d: leadership (term %d) not ended %v after the check; cut began %v before the grant, %v before the check; still cut: %v",
							i, l.Term(), ttl+time.Second, granted.Sub(at), checked.Sub(at), cut[i].Load())
					}
				}
				select {
				case <-l.Done():
					lost.Add(1)
				default:
				}
				leader.CompareAndSwap(int64(i+1), 0)
				g.release(l.Lease)
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				l.Resign(rctx) // fails when cut off: its lease expires
				rcancel()
			}
		})
	}
	for k := range 4 {
		victim := k % candidates
		if n := leader.Load(); n > 0 {
			victim = int(n - 1) // the leader, most times
		}
		cutAt[victim].Store(time.Now().UnixNano())
		cut[victim].Store(true)
		undo, err := conns[victim].fault("", drivertest.Fault{Down: true})
		if err != nil {
			t.Fatal(err)
		}
		// faultproxy checks Refuse before it dials upstream and registers
		// the connection after: one accepted meanwhile (gRPC reconnecting
		// after the last heal) escapes the first Reset. Reset again.
		time.Sleep(200 * time.Millisecond)
		undo2, err := conns[victim].fault("", drivertest.Fault{Down: true})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl + 300*time.Millisecond) // the cut lasts past the TTL
		undo2()
		undo()
		cut[victim].Store(false)
		time.Sleep(time.Second) // the others hand over among themselves
	}
	stop.Store(true)
	wg.Wait()
	g.check(t)
	t.Logf("%d leaderships, %d lost while leading, %d failed campaigns", g.n, lost.Load(), failed.Load())
	if g.n < 10 {
		t.Errorf("only %d leaderships in ~14 s", g.n)
	}
}
