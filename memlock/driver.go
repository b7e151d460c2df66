package memlock

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// New returns a client on a new private engine. It fails only on bad options.
func New(opts ...dlock.Option) (*dlock.Client, error) { return NewEngine().NewClient(opts...) }

// NewClient returns a new client (a new connection) on e. It fails only on
// bad options.
func (e *Engine) NewClient(opts ...dlock.Option) (*dlock.Client, error) {
	return dlock.NewClient(e.newConn(), opts...)
}

// conn is one client's connection to the engine.
type conn struct {
	e *Engine

	mu      sync.Mutex
	closed  bool
	crashed bool // cut off: calls fail, held locks are left to expire
}

var (
	_ driver.Driver      = (*conn)(nil)
	_ driver.Capable     = (*conn)(nil)
	_ driver.Inspector   = (*conn)(nil)
	_ driver.Observer    = (*conn)(nil)
	_ driver.Lister      = (*conn)(nil)
	_ driver.Lock        = (*hold)(nil)
	_ driver.ValueSetter = (*hold)(nil)
)

func (e *Engine) newConn() *conn { return &conn{e: e} }

// check fails calls on a closed or crashed connection.
func (c *conn) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.crashed {
		return driver.ErrClosed
	}
	return nil
}

// crash cuts the connection without releasing anything, as a dying process.
func (c *conn) crash() {
	c.mu.Lock()
	c.crashed = true
	c.mu.Unlock()
}

func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return driver.ErrClosed
	}
	c.closed = true
	c.mu.Unlock()
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, ws := range e.watchers {
		for w := range ws {
			if w.c == c {
				e.unwatch(name, w)
			}
		}
	}
	return nil
}

func (c *conn) Holder(_ context.Context, name string) (driver.Holder, error) {
	if err := c.check(); err != nil {
		return driver.Holder{}, err
	}
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	return c.e.holder(name), nil
}

func (c *conn) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	e := c.e
	w := &watcher{c: c, ch: make(chan driver.Holder, 1)}
	e.mu.Lock()
	// Checked under e.mu: a Close after this finds the watcher and ends it.
	if err := c.check(); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	if e.watchers[name] == nil {
		e.watchers[name] = map[*watcher]struct{}{}
	}
	e.watchers[name][w] = struct{}{}
	w.send(e.holder(name))
	e.mu.Unlock()
	context.AfterFunc(ctx, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.unwatch(name, w)
	})
	return w.ch, nil
}

func (c *conn) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingProcess,
		FIFO:    true,
		Scope:   "process",
		Notes:   "in-process engine: locks and tokens live as long as the process",

		Shared:    true,
		Semaphore: true,
		Election:  true,
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
	return ent.status(), nil
}

func (c *conn) List(_ context.Context, prefix string) ([]driver.Listed, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	var ls []driver.Listed
	for name, ent := range e.locks {
		if strings.HasPrefix(name, prefix) {
			ls = append(ls, driver.Listed{Name: name, Status: ent.status()})
		}
	}
	slices.SortFunc(ls, func(a, b driver.Listed) int { return strings.Compare(a.Name, b.Name) })
	return ls, nil
}

// status is the entry's driver.Status; e.mu held.
func (ent *entry) status() driver.Status {
	st := driver.Status{Waiters: len(ent.queue), Holders: len(ent.holders), Limit: ent.limit}
	for _, h := range ent.holders {
		st.Held, st.Mode = true, h.mode
		st.Token = max(st.Token, h.token)
		if left := time.Until(h.until); st.TTLLeft == 0 || left < st.TTLLeft {
			st.TTLLeft = left // the first to expire
		}
	}
	return st
}
