// Package memlock is an in-process dlock driver: a lock engine that lives in
// the process, with TTLs, FIFO waiting and fencing tokens that behave like a
// real engine's. Use it in unit tests and examples, and to coordinate
// goroutines that will later be separate processes.
//
//	c := memlock.New()               // a client on a private engine
//	e := memlock.NewEngine()         // or several clients on one engine
//	c1, c2 := e.NewClient(), e.NewClient()
//
// The URL "mem://" opens a client on the process-wide engine, "mem://NAME"
// on the engine called NAME (created on first use).
package memlock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func init() {
	dlock.Register("mem", func(_ context.Context, u *url.URL) (driver.Driver, error) {
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("%w: mem URL %q: want mem:// or mem://NAME", dlock.ErrInvalidArgument, u.Redacted())
		}
		return named(u.Host).newConn(), nil
	})
}

var (
	enginesMu sync.Mutex
	engines   = map[string]*Engine{}
)

func named(name string) *Engine {
	enginesMu.Lock()
	defer enginesMu.Unlock()
	e := engines[name]
	if e == nil {
		e = NewEngine()
		engines[name] = e
	}
	return e
}

// Engine is an in-process lock engine. Clients made from one engine contend
// for the same locks; each client is like a separate connection to a server.
type Engine struct {
	mu    sync.Mutex
	locks map[string]*entry
	fence uint64 // one counter for all names: strictly increasing per name too
}

type entry struct {
	holder *hold
	queue  []*waiter
}

type hold struct {
	e      *Engine
	c      *conn
	name   string
	token  uint64
	expiry *time.Timer
	ttl    time.Duration
	until  time.Time     // when expiry fires; e.mu
	lost   chan struct{} // closed when the engine drops the hold (expiry, Drop)
}

type waiter struct {
	c     *conn
	ttl   time.Duration
	ready chan *hold // buffered: the engine never blocks on a waiter
}

// NewEngine returns an empty engine.
func NewEngine() *Engine { return &Engine{locks: map[string]*entry{}} }

// New returns a client on a new private engine. It fails only on bad options.
func New(opts ...dlock.Option) (*dlock.Client, error) { return NewEngine().NewClient(opts...) }

// NewClient returns a new client (a new connection) on e. It fails only on
// bad options.
func (e *Engine) NewClient(opts ...dlock.Option) (*dlock.Client, error) {
	return dlock.NewClient(e.newConn(), opts...)
}

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

// conn is one client's connection to the engine.
type conn struct {
	e *Engine

	mu      sync.Mutex
	closed  bool
	crashed bool // cut off: calls fail, held locks are left to expire
}

var (
	_ driver.Driver    = (*conn)(nil)
	_ driver.Capable   = (*conn)(nil)
	_ driver.Inspector = (*conn)(nil)
	_ driver.Lock      = (*hold)(nil)
)

var errConnClosed = errors.New("memlock: connection closed")

func (e *Engine) newConn() *conn { return &conn{e: e} }

func (c *conn) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.crashed {
		return errConnClosed
	}
	return nil
}

// crash cuts the connection without releasing anything, as a dying process.
func (c *conn) crash() {
	c.mu.Lock()
	c.crashed = true
	c.mu.Unlock()
}

func (c *conn) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	since := time.Now()
	if err := c.check(); err != nil {
		return nil, driver.Validity{}, err
	}
	e := c.e
	e.mu.Lock()
	ent := e.locks[req.Name]
	if ent == nil {
		ent = &entry{}
		e.locks[req.Name] = ent
	}
	if ent.holder == nil && len(ent.queue) == 0 {
		h := e.grant(req.Name, ent, c, req.TTL)
		e.mu.Unlock()
		return h, driver.Validity{Since: since, TTL: req.TTL}, nil
	}
	if !req.Wait {
		e.mu.Unlock()
		return nil, driver.Validity{}, driver.ErrNotAcquired
	}
	w := &waiter{c: c, ttl: req.TTL, ready: make(chan *hold, 1)}
	ent.queue = append(ent.queue, w)
	e.mu.Unlock()

	select {
	case h := <-w.ready:
		if err := c.check(); err != nil {
			return nil, driver.Validity{}, err // a dead client's grant just expires
		}
		// The engine's clock for this hold started at the grant, in the
		// releaser's goroutine, not now that we woke up.
		return h, driver.Validity{Since: h.until.Add(-h.ttl), TTL: req.TTL}, nil
	case <-ctx.Done():
	}
	e.mu.Lock()
	if i := slices.Index(ent.queue, w); i >= 0 {
		ent.queue = slices.Delete(ent.queue, i, i+1)
		if ent.holder == nil && len(ent.queue) == 0 {
			delete(e.locks, req.Name)
		}
		e.mu.Unlock()
		return nil, driver.Validity{}, ctx.Err()
	}
	e.mu.Unlock()
	h := <-w.ready // granted as we gave up: hand it on
	_ = h.Release(context.Background())
	return nil, driver.Validity{}, ctx.Err()
}

func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errConnClosed
	}
	c.closed = true
	return nil
}

func (c *conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingProcess,
		FIFO:    true,
		Scope:   "process",
		Notes:   "in-process engine: locks and tokens live as long as the process",
	}
}

func (c *conn) Status(_ context.Context, name string) (driver.Status, error) {
	if err := c.check(); err != nil {
		return driver.Status{}, err
	}
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ent := e.locks[name]
	if ent == nil {
		return driver.Status{}, nil
	}
	st := driver.Status{Waiters: len(ent.queue)}
	if h := ent.holder; h != nil {
		st.Held, st.Token = true, h.token
		st.TTLLeft = time.Until(h.until)
	}
	return st, nil
}

func (h *hold) Token() uint64 { return h.token }

func (h *hold) Lost() <-chan struct{} { return h.lost }

// owned reports whether h is still the holder of its lock; e.mu held.
func (h *hold) owned() bool {
	ent := h.e.locks[h.name]
	return ent != nil && ent.holder == h
}

func (h *hold) Renew(ctx context.Context) (driver.Validity, error) {
	since := time.Now()
	if err := h.c.check(); err != nil {
		return driver.Validity{}, err
	}
	if err := ctx.Err(); err != nil {
		return driver.Validity{}, err
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if !h.owned() {
		return driver.Validity{}, driver.ErrLockLost
	}
	h.expiry.Reset(h.ttl)
	h.until = time.Now().Add(h.ttl)
	return driver.Validity{Since: since, TTL: h.ttl}, nil
}

func (h *hold) Release(ctx context.Context) error {
	if err := h.c.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if !h.owned() {
		return driver.ErrLockLost
	}
	h.expiry.Stop()
	ent := h.e.locks[h.name]
	ent.holder = nil
	h.e.grantNext(h.name, ent)
	return nil
}
