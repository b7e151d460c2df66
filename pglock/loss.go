package pglock

import "github.com/dlockio/dlock/driver"

// Loss of a held lock, with no goroutine per lock (driver.LossNotifier):
// a session keeps the locks it holds, and its end (session.kill, which the
// watcher, a failed statement or Close calls) marks each of them lost, once,
// calling the portable layer's function. A released lock has left the
// session by then, and is never called.

var _ driver.LossNotifier = (*lock)(nil)

// NotifyLost implements driver.LossNotifier: f is called once, when the
// lock's session ends (at once if it has ended already).
func (l *lock) NotifyLost(f func()) {
	l.lmu.Lock()
	if !l.lostFired {
		l.notify = f
		l.lmu.Unlock()
		return
	}
	l.lmu.Unlock()
	f()
}

// markLost reports the lock lost, once, unless it was released.
func (l *lock) markLost() {
	l.lmu.Lock()
	if l.lostFired || l.released.Load() {
		l.lmu.Unlock()
		return
	}
	l.lostFired = true
	f := l.notify
	l.notify = nil
	l.lmu.Unlock()
	if f != nil {
		f()
	}
}

// add keeps l among the session's held locks, or marks it lost if the
// session has ended already.
func (s *session) add(l *lock) {
	s.mu.Lock()
	if s.deadErr == nil {
		s.held[l] = struct{}{}
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	l.markLost()
}

// drop forgets l, released: the session's end no longer concerns it.
func (s *session) drop(l *lock) {
	s.mu.Lock()
	delete(s.held, l)
	s.mu.Unlock()
}

// loseAll marks every lock the session held lost, and returns how many;
// kill calls it once, after the session is marked dead (so that no lock
// joins it any more).
func (s *session) loseAll() int {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for l := range held {
		l.markLost()
	}
	return len(held)
}
