package zklock

import "sync"

// bgGroup counts the driver's background work (calls and cleanups that
// outlive their caller) like a sync.WaitGroup, except that work may be
// added while Close waits for it: a Release that fails while the driver
// closes hands its node to a background removal (removeAsync), and a
// WaitGroup forbids an Add from zero concurrent with its Wait (the race
// detector caught it in TestDriverCloseBounded). Wait returns once the
// count is zero, work added meanwhile included.
type bgGroup struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (g *bgGroup) Add(k int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n += k
	if g.n < 0 {
		panic("zklock: negative background work count")
	}
	if g.n == 0 && g.zero != nil {
		close(g.zero)
		g.zero = nil
	}
}

func (g *bgGroup) Done() { g.Add(-1) }

func (g *bgGroup) Wait() {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return
	}
	if g.zero == nil {
		g.zero = make(chan struct{})
	}
	z := g.zero
	g.mu.Unlock()
	<-z
}
