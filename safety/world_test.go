package safety

import (
	"sync"
	"time"

	"github.com/dlockio/dlock/safety/internal/check"
)

// What the scenario serves its workers: the resource (with the injected
// pause before a worker acts on it) and the records of leader reads; and
// the in-process workers' side of it.

// pausePoint pauses the worker if the injector asked for it: the moment
// after a worker's check of Done and before it acts on the resource (a
// write, a reader's second read), or before a permit holder leaves it.
func (s *scenario) pausePoint(pause func(time.Duration)) {
	select {
	case done := <-s.pauseWriter:
		pause(s.pauseFor)
		s.fault("pause")
		close(done)
	default:
	}
}

// write applies a worker's write, after the pause the injector asked for.
func (s *scenario) write(client int, token uint64, value int, set []int, elem int, pause func(time.Duration)) bool {
	s.pausePoint(pause)
	ok := s.res.Write(client, token, value, set, elem)
	if ok {
		s.mu.Lock()
		s.acked = append(s.acked, elem)
		s.mu.Unlock()
	}
	return ok
}

// read serves a read and tells the injector who holds the lock now.
func (s *scenario) read(client int, token uint64) (int, []int, bool) {
	c, set, ok := s.res.Read(client, token)
	if ok {
		s.holds(client)
	}
	return c, set, ok
}

// holds tells the injector that client holds the lock (or a permit) now.
func (s *scenario) holds(client int) {
	select {
	case s.holder <- client:
	default:
	}
}

// recheck serves a reader's second read, after the pause asked for.
func (s *scenario) recheck(client int, token uint64, pause func(time.Duration)) bool {
	s.pausePoint(pause)
	return s.res.Recheck(client, token)
}

// enter registers a permit holder.
func (s *scenario) enter(client int, token uint64) bool {
	ok := s.res.Enter(client, token)
	if ok {
		s.holds(client)
	}
	return ok
}

// leave unregisters a permit holder, after the pause asked for.
func (s *scenario) leave(token uint64, pause func(time.Duration)) {
	s.pausePoint(pause)
	s.res.Leave(token)
}

func (s *scenario) leader(o check.Observation) {
	s.mu.Lock()
	s.leaders = append(s.leaders, o)
	s.mu.Unlock()
}

// inProcWorld is a goroutine worker's world.
type inProcWorld struct {
	s      *scenario
	client int
	gate   *gate
	seq    int
	mu     sync.Mutex
}

func (w *inProcWorld) Begin(op check.Op) int {
	w.mu.Lock()
	w.seq++
	id := w.seq
	w.mu.Unlock()
	w.s.begin(w.client, id, op)
	return id
}

func (w *inProcWorld) End(id int, op check.Op) { w.s.end(w.client, id, op) }

func (w *inProcWorld) Read(client int, token uint64) (int, []int, bool) {
	return w.s.read(client, token)
}

func (w *inProcWorld) Write(client int, token uint64, value int, set []int, elem int) bool {
	return w.s.write(client, token, value, set, elem, w.pause)
}

func (w *inProcWorld) Recheck(client int, token uint64) bool {
	return w.s.recheck(client, token, w.pause)
}

func (w *inProcWorld) Enter(client int, token uint64) bool { return w.s.enter(client, token) }

func (w *inProcWorld) Leave(_ int, token uint64) { w.s.leave(token, w.pause) }

func (w *inProcWorld) Leader(o check.Observation) { w.s.leader(o) }

// pause freezes the worker for d. The worker goroutine is the caller, so
// it is frozen already; the gate holds its renewals and releases, as
// SIGSTOP would.
func (w *inProcWorld) pause(d time.Duration) {
	w.gate.pause()
	time.Sleep(d) // the length of the injected pause, not a synchronisation
	w.gate.resume()
}
