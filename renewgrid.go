package dlock

import (
	"sync"
	"time"

	"github.com/dlockio/dlock/driver"
)

// renewGrid schedules the renewals of a client whose driver coalesces them
// (driver.RenewCoalescer). Their leases renew at the points of a shared
// grid (Lease.renewAt), many at each point: one timer per point starts the
// renewal of every lease due then, one after the other from one goroutine,
// instead of a timer per lease whose firing is a goroutine each (a burst
// of N goroutines at every renewal wave of N leases). A driver that renews
// by a call (driver.AsyncRenewer) returns at once from each start, and
// sees the whole wave arrive together, which is what its batching needs.
type renewGrid struct {
	mu     sync.Mutex
	points map[int64]*renewPoint // by due time, in Unix nanoseconds
	closed bool
}

type renewPoint struct {
	t      *time.Timer
	leases []*Lease
}

func newRenewGrid() *renewGrid { return &renewGrid{points: map[int64]*renewPoint{}} }

// schedule arranges for l to renew at at, in place of any renewal it had
// scheduled.
func (g *renewGrid) schedule(l *Lease, at time.Time) {
	k := at.UnixNano()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.remove(l)
	l.due = k
	p := g.points[k]
	if p == nil {
		p = &renewPoint{}
		p.t = time.AfterFunc(time.Until(at), func() { g.fire(k) })
		g.points[k] = p
	}
	l.slot = len(p.leases)
	p.leases = append(p.leases, l)
}

// unschedule cancels l's scheduled renewal. The lease leaves its point, so
// that an ended lease is not kept in memory until the point fires (a
// client that locks and unlocks quickly would keep every lease of the
// last renewal interval); the point and its timer stay, even if empty,
// for the next leases due then.
func (g *renewGrid) unschedule(l *Lease) {
	g.mu.Lock()
	g.remove(l)
	g.mu.Unlock()
}

// remove takes l off the point it is due at, if that point has not fired
// (fire takes a point out of points before it reads its leases, so a
// point in points is g.mu's), and marks it due nowhere. g.mu is held.
func (g *renewGrid) remove(l *Lease) {
	if p := g.points[l.due]; p != nil && l.slot < len(p.leases) && p.leases[l.slot] == l {
		last := len(p.leases) - 1
		p.leases[l.slot] = p.leases[last]
		p.leases[l.slot].slot = l.slot
		p.leases[last] = nil
		p.leases = p.leases[:last]
	}
	l.due = 0
}

// fire starts the renewals due at k: those of its leases still due then
// (a lease rescheduled or ended since is skipped).
func (g *renewGrid) fire(k int64) {
	g.mu.Lock()
	p := g.points[k]
	delete(g.points, k)
	g.mu.Unlock()
	if p == nil {
		return
	}
	for _, l := range p.leases {
		g.mu.Lock()
		due := l.due == k
		if due {
			l.due = 0
		}
		g.mu.Unlock()
		if !due {
			continue
		}
		if _, ok := l.held.(driver.AsyncRenewer); ok {
			l.renew() // returns once the renewal is started
		} else {
			go l.renew() // Renew waits for the engine, and the others for it
		}
	}
}

// close stops every point's timer: the client is closing.
func (g *renewGrid) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for k, p := range g.points {
		p.t.Stop()
		delete(g.points, k)
	}
}
