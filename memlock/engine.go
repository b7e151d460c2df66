package memlock

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Engine is an in-process lock engine. Clients made from one engine contend
// for the same locks; each client is like a separate connection to a server.
type Engine struct {
	mu       sync.Mutex
	locks    map[string]*entry
	fence    uint64 // one counter for all names: strictly increasing per name too
	watchers map[string]map[*watcher]struct{}
}

// watcher is an Observe call: it is sent the latest holder of its name.
type watcher struct {
	c  *conn
	ch chan driver.Holder // capacity 1: the latest holder, never a backlog
}

// entry is one name's state: its holders and its FIFO queue. A name is a
// lock (limit 0: one Exclusive holder, or any number of Shared ones) or a
// semaphore of limit permits, for as long as it has holders or waiters.
type entry struct {
	limit   int
	holders []*hold
	queue   []*waiter
}

// waiter is a blocked Acquire in an entry's queue.
type waiter struct {
	c     *conn
	mode  driver.Mode
	value string
	ttl   time.Duration
	ready chan *hold // buffered: the engine never blocks on a waiter
}

// NewEngine returns an empty engine.
func NewEngine() *Engine {
	return &Engine{locks: map[string]*entry{}, watchers: map[string]map[*watcher]struct{}{}}
}

// Drop makes the engine forget the holders of name, as an operator deleting
// the lock would; their leases learn at once. It reports whether the lock
// was held.
func (e *Engine) Drop(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent := e.locks[name]
	if ent == nil || len(ent.holders) == 0 {
		return false
	}
	for _, h := range slices.Clone(ent.holders) {
		h.expiry.Stop()
		h.markLost()
		ent.remove(h)
	}
	e.grantWaiting(name, ent)
	e.notify(name)
	return true
}

// entryFor returns the entry of a request for name, made if missing, or an
// error if the name is in use under another limit; e.mu held.
func (e *Engine) entryFor(name string, limit int) (*entry, error) {
	ent := e.locks[name]
	if ent == nil {
		ent = &entry{limit: limit}
		e.locks[name] = ent
		return ent, nil
	}
	if ent.limit != limit {
		return nil, driver.InvalidArgument("Limit", limit, fmt.Sprintf("%s, as %q is held or awaited with", kind(ent.limit), name))
	}
	return ent, nil
}

func kind(limit int) string {
	if limit == 0 {
		return "0 (a lock, not a semaphore)"
	}
	return fmt.Sprintf("%d permits", limit)
}

// admits reports whether a request in mode can hold now, ignoring the queue.
func (ent *entry) admits(mode driver.Mode) bool {
	switch {
	case ent.limit > 0:
		return len(ent.holders) < ent.limit
	case len(ent.holders) == 0:
		return true
	default:
		return mode == driver.Shared && ent.holders[0].mode == driver.Shared
	}
}

func (ent *entry) remove(h *hold) {
	if i := slices.Index(ent.holders, h); i >= 0 {
		ent.holders = slices.Delete(ent.holders, i, i+1)
	}
}

// grantWaiting grants the queue's head for as long as it is admitted (a
// run of readers together; never past a waiting writer), and forgets the
// name once nobody holds or waits; e.mu held.
func (e *Engine) grantWaiting(name string, ent *entry) {
	for len(ent.queue) > 0 && ent.admits(ent.queue[0].mode) {
		w := ent.queue[0]
		ent.queue = ent.queue[1:]
		w.ready <- e.grant(name, ent, w)
	}
	if len(ent.holders) == 0 && len(ent.queue) == 0 {
		delete(e.locks, name)
	}
}

func (e *Engine) grant(name string, ent *entry, w *waiter) *hold {
	e.fence++
	h := &hold{e: e, c: w.c, name: name, mode: w.mode, value: w.value, token: e.fence, ttl: w.ttl, until: time.Now().Add(w.ttl), lost: make(chan struct{})}
	h.expiry = time.AfterFunc(w.ttl, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if h.owned() {
			h.markLost()
			cur := e.locks[name]
			cur.remove(h)
			e.grantWaiting(name, cur)
			e.notify(name)
		}
	})
	ent.holders = append(ent.holders, h)
	e.notify(name)
	return h
}

// holder is name's exclusive holder, as Observer reports it; e.mu held.
func (e *Engine) holder(name string) driver.Holder {
	ent := e.locks[name]
	if ent == nil || ent.limit > 0 || len(ent.holders) != 1 || ent.holders[0].mode != driver.Exclusive {
		return driver.Holder{}
	}
	h := ent.holders[0]
	return driver.Holder{Token: h.token, Value: h.value}
}

// notify sends name's holder to its watchers, replacing what they have
// not read yet; e.mu held.
func (e *Engine) notify(name string) {
	ws := e.watchers[name]
	if len(ws) == 0 {
		return
	}
	cur := e.holder(name)
	for w := range ws {
		w.send(cur)
	}
}

// send replaces the unread holder, if any, with h. Only the engine sends,
// under e.mu, so the send after the drain never blocks.
func (w *watcher) send(h driver.Holder) {
	select {
	case <-w.ch:
	default:
	}
	w.ch <- h
}

// unwatch ends a watcher (once); e.mu held.
func (e *Engine) unwatch(name string, w *watcher) {
	ws := e.watchers[name]
	if _, ok := ws[w]; !ok {
		return
	}
	delete(ws, w)
	if len(ws) == 0 {
		delete(e.watchers, name)
	}
	close(w.ch)
}
