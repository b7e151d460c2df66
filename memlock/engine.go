package memlock

import (
	"sync"
	"time"
)

// Engine is an in-process lock engine. Clients made from one engine contend
// for the same locks; each client is like a separate connection to a server.
type Engine struct {
	mu    sync.Mutex
	locks map[string]*entry
	fence uint64 // one counter for all names: strictly increasing per name too
}

// entry is one lock name's state: its holder and its FIFO queue.
type entry struct {
	holder *hold
	queue  []*waiter
}

// waiter is a blocked Acquire in an entry's queue.
type waiter struct {
	c     *conn
	ttl   time.Duration
	ready chan *hold // buffered: the engine never blocks on a waiter
}

// NewEngine returns an empty engine.
func NewEngine() *Engine { return &Engine{locks: map[string]*entry{}} }

// Drop makes the engine forget the holder of name, as an operator deleting
// the lock would; the holder's lease learns at once. It reports whether the
// lock was held.
func (e *Engine) Drop(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	ent := e.locks[name]
	if ent == nil || ent.holder == nil {
		return false
	}
	e.drop(ent, ent.holder)
	return true
}

// drop removes h as the holder, tells it, and grants the next waiter.
func (e *Engine) drop(ent *entry, h *hold) {
	h.expiry.Stop()
	close(h.lost)
	ent.holder = nil
	e.grantNext(h.name, ent)
}

func (e *Engine) grantNext(name string, ent *entry) {
	if len(ent.queue) == 0 {
		delete(e.locks, name)
		return
	}
	w := ent.queue[0]
	ent.queue = ent.queue[1:]
	w.ready <- e.grant(name, ent, w.c, w.ttl)
}

func (e *Engine) grant(name string, ent *entry, c *conn, ttl time.Duration) *hold {
	e.fence++
	h := &hold{e: e, c: c, name: name, token: e.fence, ttl: ttl, until: time.Now().Add(ttl), lost: make(chan struct{})}
	h.expiry = time.AfterFunc(ttl, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if cur := e.locks[name]; cur != nil && cur.holder == h {
			e.drop(cur, h)
		}
	})
	ent.holder = h
	return h
}
