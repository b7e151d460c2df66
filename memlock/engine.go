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
	mu    sync.Mutex
	locks map[string]*entry
	fence uint64 // one counter for all names: strictly increasing per name too
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
	ttl   time.Duration
	ready chan *hold // buffered: the engine never blocks on a waiter
}

// NewEngine returns an empty engine.
func NewEngine() *Engine { return &Engine{locks: map[string]*entry{}} }

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
		close(h.lost)
		ent.remove(h)
	}
	e.grantWaiting(name, ent)
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
		w.ready <- e.grant(name, ent, w.c, w.mode, w.ttl)
	}
	if len(ent.holders) == 0 && len(ent.queue) == 0 {
		delete(e.locks, name)
	}
}

func (e *Engine) grant(name string, ent *entry, c *conn, mode driver.Mode, ttl time.Duration) *hold {
	e.fence++
	h := &hold{e: e, c: c, name: name, mode: mode, token: e.fence, ttl: ttl, until: time.Now().Add(ttl), lost: make(chan struct{})}
	h.expiry = time.AfterFunc(ttl, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if h.owned() {
			close(h.lost)
			cur := e.locks[name]
			cur.remove(h)
			e.grantWaiting(name, cur)
		}
	})
	ent.holders = append(ent.holders, h)
	return h
}
