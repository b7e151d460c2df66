package dlock

import (
	"context"
	"fmt"

	"github.com/dlockio/dlock/driver"
)

// Election elects one leader among the clients that campaign under a name:
// "one active instance of this service". Leadership is the exclusive lock
// of the name (a Mutex of the same name contends with it) plus a value the
// leader publishes (its address, say), which any client can read (Leader)
// or follow (Observe).
//
// A leader holds a *Leadership, a lease like any other: renewed while held,
// its Done closed the moment leadership is lost and before the engine can
// let another candidate lead. Its term (Token) strictly increases from one
// leader to the next: pass it along with what the leader writes, so that a
// deposed leader's late writes can be refused. Drivers whose engine cannot
// keep the value return ErrNotSupported (see Capabilities.Election).
type Election struct {
	c    *Client
	name string
	cfg  config
}

// Election returns the election called name. Options given here apply to
// its leaderships only, after the client's.
func (c *Client) Election(name string, opts ...Option) *Election {
	return &Election{c: c, name: name, cfg: c.cfg.with(opts)}
}

// Name returns the election's name.
func (e *Election) Name() string { return e.name }

// Leader is an election's leader as seen from outside: its value and its
// term. The zero Leader (Term 0) means nobody leads.
type Leader struct {
	Value string
	Term  uint64
}

// Leadership is a won election: the leader's lease, with the election's own
// operations. Term is the lease's Token; Resign is Unlock.
type Leadership struct {
	*Lease
	e *Election
}

// Campaign waits until this client leads, ctx is done or the client is
// closed, as Mutex.Lock waits for the lock, and publishes value as the
// leader's value from the moment leadership is granted. A Campaign that
// returns an error leads nothing and leaves nothing queued.
func (e *Election) Campaign(ctx context.Context, value string) (*Leadership, error) {
	return e.campaign(ctx, value, true)
}

// TryCampaign makes one attempt, as Mutex.TryLock does: an error matching
// ErrNotAcquired means someone else leads.
func (e *Election) TryCampaign(ctx context.Context, value string) (*Leadership, error) {
	return e.campaign(ctx, value, false)
}

func (e *Election) campaign(ctx context.Context, value string, wait bool) (*Leadership, error) {
	op := "campaign"
	if !wait {
		op = "trycampaign"
	}
	if !e.c.Capabilities().Election {
		return nil, wrap(e.name, op, fmt.Errorf("%w: elections", ErrNotSupported))
	}
	l, err := e.c.acquire(ctx, primElection, e.name, e.cfg, op, driver.Request{Wait: wait, Value: value})
	if err != nil {
		return nil, err
	}
	return &Leadership{Lease: l, e: e}, nil
}

// Term returns the leader's term, its lease's fencing token.
func (l *Leadership) Term() uint64 { return l.Token() }

// Resign gives leadership up; the next candidate, if any, is elected. It is
// Unlock.
func (l *Leadership) Resign(ctx context.Context) error { return l.Unlock(ctx) }

// Proclaim replaces the leader's value, if this client still leads;
// otherwise it returns an error matching ErrLockLost (leadership lost) or
// ErrNotHeld (resigned) and changes nothing.
func (l *Leadership) Proclaim(ctx context.Context, value string) error {
	if ctx == nil {
		return wrap(l.name, "proclaim", invalid("ctx", nil, "a non-nil context.Context"))
	}
	if err := l.Err(); err != nil {
		return wrap(l.name, "proclaim", err)
	}
	vs, ok := l.held.(driver.ValueSetter)
	if !ok {
		return wrap(l.name, "proclaim", fmt.Errorf("%w: the driver's lock (%T) cannot change its value", ErrNotSupported, l.held))
	}
	if err := vs.SetValue(ctx, value); err != nil {
		return wrap(l.name, "proclaim", err)
	}
	return nil
}

// Leader returns the current leader's value and term, or the zero Leader if
// nobody leads.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	ob, err := e.observer(ctx, "leader")
	if err != nil {
		return Leader{}, err
	}
	h, err := ob.Holder(ctx, e.name)
	if err != nil {
		return Leader{}, wrap(e.name, "leader", err)
	}
	return Leader{Value: h.Value, Term: h.Token}, nil
}

// Observe returns a channel that receives the leader now and then after
// every change: a new leader, a new value (Proclaim), nobody (the zero
// Leader). A slow reader may miss leaders in between but always receives
// the latest; the leaders' terms never decrease. The channel is closed when
// ctx ends or the client is closed.
func (e *Election) Observe(ctx context.Context) (<-chan Leader, error) {
	ob, err := e.observer(ctx, "observe")
	if err != nil {
		return nil, err
	}
	if err := e.c.begin(); err != nil {
		return nil, wrap(e.name, "observe", err)
	}
	octx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.c.closeCtx, cancel)
	hs, err := ob.Observe(octx, e.name)
	if err != nil {
		stop()
		cancel()
		e.c.calls.Done()
		return nil, wrap(e.name, "observe", err)
	}
	out := make(chan Leader)
	go func() {
		defer e.c.calls.Done()
		defer close(out)
		defer cancel()
		defer stop()
		for h := range hs {
			select {
			case out <- Leader{Value: h.Value, Term: h.Token}:
				continue
			case <-octx.Done():
			}
			// The reader is gone: drain until the driver closes hs.
			for range hs {
			}
			return
		}
	}()
	return out, nil
}

func (e *Election) observer(ctx context.Context, op string) (driver.Observer, error) {
	if ctx == nil {
		return nil, wrap(e.name, op, invalid("ctx", nil, "a non-nil context.Context"))
	}
	if e.name == "" {
		return nil, wrap(e.name, op, invalid("name", `""`, "a non-empty election name (any bytes)"))
	}
	ob, ok := e.c.drv.(driver.Observer)
	if !ok || !e.c.Capabilities().Election {
		return nil, wrap(e.name, op, fmt.Errorf("%w: elections", ErrNotSupported))
	}
	return ob, nil
}
