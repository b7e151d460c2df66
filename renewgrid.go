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
	l.due = k
	p := g.points[k]
	if p == nil {
		p = &renewPoint{}
		p.t = time.AfterFunc(time.Until(at), func() { g.fire(k) })
		g.points[k] = p
	}
	p.leases = append(p.leases, l)
}

// unschedule cancels l's scheduled renewal.
func (g *renewGrid) unschedule(l *Lease) {
	g.mu.Lock()
	l.due = 0
	g.mu.Unlock()
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
