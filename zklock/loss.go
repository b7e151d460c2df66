package zklock

import (
	"sync"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// Loss of a held lock, with no goroutine per lock (driver.LossNotifier):
//
//   - the session's end loses every lock of the session: the session keeps
//     its held locks and marks them lost when it ends (session.end);
//   - our node's deletion (by an operator, say) comes as an event of the
//     exists-watch armed on it; go-zookeeper hands every watch event to the
//     driver's event callback (Dial's connection) or event channel (New's),
//     and the driver keeps the held nodes by path (nodeWatches);
//   - the renewal's check of the node at the leader (batch.go) finds it
//     gone in any case, the watch only makes it prompt.
//
// New without an event channel gets no watch events: each held lock then
// reads its own watch, in a goroutine of its own (zkLock.watch).

var _ driver.LossNotifier = (*zkLock)(nil)

// NotifyLost implements driver.LossNotifier.
func (l *zkLock) NotifyLost(f func()) {
	l.mu.Lock()
	if !l.lostFired {
		l.notify = f
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	f()
}

// markLost reports the lock lost: once, by its channel and its callback.
func (l *zkLock) markLost() {
	l.mu.Lock()
	if l.lostFired {
		l.mu.Unlock()
		return
	}
	l.lostFired = true
	f := l.notify
	if l.lost != nil {
		close(l.lost)
	}
	l.mu.Unlock()
	if f != nil {
		f()
	}
}

// isLost reports whether the lock was reported lost.
func (l *zkLock) isLost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostFired
}

// isReleased reports whether Release was called.
func (l *zkLock) isReleased() bool { return l.released.Load() }

// nodeWatch is the driver's record of a node whose exists-watch reports
// loss: armed once the node is created, its lock set once it is granted.
type nodeWatch struct {
	gone bool    // deleted before the grant
	lock *zkLock // the granted lock
}

// nodeWatches holds the driver's watched nodes by path.
type nodeWatches struct {
	mu sync.Mutex
	m  map[string]*nodeWatch
}

// watchNode starts recording the events of nodePath's watch; call it
// before the watch is armed.
func (d *Driver) watchNode(nodePath string) {
	w := &d.watches
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[string]*nodeWatch)
	}
	w.m[nodePath] = &nodeWatch{}
	w.mu.Unlock()
}

// holdNode records that nodePath's lock was granted as l, and reports l
// lost if the node went in the meantime.
func (d *Driver) holdNode(nodePath string, l *zkLock) {
	w := &d.watches
	w.mu.Lock()
	nw := w.m[nodePath]
	// Released already: Release has forgotten the node.
	gone := (nw == nil || nw.gone) && !l.isReleased()
	if nw != nil {
		nw.lock = l
	}
	w.mu.Unlock()
	if gone {
		l.markLost()
	}
}

// unwatchNode forgets nodePath (released, lost or never granted).
func (d *Driver) unwatchNode(nodePath string) {
	w := &d.watches
	w.mu.Lock()
	delete(w.m, nodePath)
	w.mu.Unlock()
}

// onNodeEvent handles a watch event of a node, from go-zookeeper's receive
// loop (Dial's) or the event channel (New's): it must not block.
func (d *Driver) onNodeEvent(ev zk.Event) {
	w := &d.watches
	w.mu.Lock()
	nw := w.m[ev.Path]
	if nw == nil {
		w.mu.Unlock()
		return
	}
	switch ev.Type {
	case zk.EventNodeDeleted:
		nw.gone = true
		delete(w.m, ev.Path)
	case zk.EventNodeDataChanged:
		// Our node's data changed (an election's SetValue): the watch
		// fired and must be armed again, off the receive loop.
		if l := nw.lock; l != nil && !l.isReleased() {
			d.bg.Add(1)
			go d.rewatchHeld(l)
		}
		w.mu.Unlock()
		return
	default:
		w.mu.Unlock()
		return
	}
	l := nw.lock
	w.mu.Unlock()
	if l != nil && !l.isReleased() {
		l.markLost()
	}
}

// rewatchHeld arms l's node's watch again after a data change. A node
// found gone is lost; a failed read leaves it to the renewals.
func (d *Driver) rewatchHeld(l *zkLock) {
	defer d.bg.Done()
	exists, _, _, err := d.conn.ExistsW(l.path)
	if err == nil && !exists && !l.isReleased() {
		d.unwatchNode(l.path)
		l.markLost()
	}
}

// add keeps l among the session's held locks, or reports it lost if the
// session has ended.
func (s *session) add(l *zkLock) {
	s.mu.Lock()
	if l.isReleased() { // Release drops it after it is marked released
		s.mu.Unlock()
		return
	}
	if !s.isEnded {
		if s.held == nil {
			s.held = make(map[*zkLock]struct{})
		}
		s.held[l] = struct{}{}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	l.markLost()
}

// drop forgets l (released).
func (s *session) drop(l *zkLock) {
	s.mu.Lock()
	delete(s.held, l)
	s.mu.Unlock()
}
