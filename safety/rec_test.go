package safety

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/safety/internal/check"
)

// recorder receives a worker's lock operations: Begin before the request
// (so an operation cut short by a SIGKILL is still known, with an unknown
// outcome) and End after the answer.
type recorder interface {
	Begin(op check.Op) int
	End(id int, op check.Op)
}

// recDriver records every engine round trip of one client, and can emulate
// the two things the suite injects below the portable layer: a pause of the
// client's requests (gate) and a Release that ignores ownership (unsafeDrop).
type recDriver struct {
	inner  driver.Driver
	client int
	rec    recorder
	seq    atomic.Int64
	gate   *gate
	// unsafeDrop, if set, replaces Release with a delete by name that
	// ignores ownership: the safety mechanism the checker must miss.
	unsafeDrop func(name string)
	// unsafeMode, if set, breaks the request: "shared" asks the engine for
	// a reader's lease when a writer's is wanted (a writer let in beside
	// readers and writers), "limit" for one permit more than the
	// semaphore has, "stale-leader" answers each leader read with the
	// answer to the client's previous one. The history records what was
	// wanted.
	unsafeMode string
	prevMu     sync.Mutex
	prev       driver.Holder // the previous leader read, for "stale-leader"

	closed    chan struct{} // closed by Close: stops the Lost watchers
	closeOnce sync.Once
}

type recLock struct {
	d     *recDriver
	inner driver.Lock
	lease int64
	name  string
	ttl   time.Duration
	stop  chan struct{}
	once  sync.Once
	// released is the call time of the first Release: a later one that
	// succeeds may report the effect of that one or of the driver's work
	// in the background since (see Release).
	released atomic.Int64
}

func outcome(ctx context.Context, err error) check.Outcome {
	switch {
	case err == nil:
		return check.OK
	case errors.Is(err, driver.ErrNotAcquired), errors.Is(err, driver.ErrLockLost):
		return check.Refused
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return check.Cancelled
	}
	return check.Unknown
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (d *recDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	d.gate.wait()
	op := check.Op{Client: d.client, Lease: int64(d.client)*1_000_000 + d.seq.Add(1), Kind: check.Acquire, TTL: int64(req.TTL), Call: check.Now(),
		Shared: req.Mode == driver.Shared}
	id := d.rec.Begin(op)
	sent := req
	switch {
	case d.unsafeMode == "shared" && req.Limit == 0:
		sent.Mode = driver.Shared
	case d.unsafeMode == "limit" && req.Limit > 0:
		sent.Limit++
	}
	l, v, err := d.inner.Acquire(ctx, sent)
	op.Return, op.Outcome, op.Err = check.Now(), outcome(ctx, err), errText(err)
	if op.Outcome == check.Cancelled && !req.Wait {
		op.Outcome = check.Unknown // a cancelled single attempt may have taken the lock before cleaning up
	}
	if err != nil {
		d.rec.End(id, op)
		return nil, v, err
	}
	op.Token, op.Until = l.Token(), monoUntil(v)
	d.rec.End(id, op)
	rl := &recLock{d: d, inner: l, lease: op.Lease, name: req.Name, ttl: req.TTL, stop: make(chan struct{})}
	if lost := l.Lost(); lost != nil {
		go rl.watchLost(lost)
	}
	return rl, v, nil
}

// Capabilities passes the engine's on: the portable layer offers what it
// says.
func (d *recDriver) Capabilities() driver.Capabilities {
	if c, ok := d.inner.(driver.Capable); ok {
		return c.Capabilities()
	}
	return driver.Capabilities{}
}

// Holder and Observe pass an election's reads on (driver.Observer).
func (d *recDriver) Holder(ctx context.Context, name string) (driver.Holder, error) {
	ob, ok := d.inner.(driver.Observer)
	if !ok {
		return driver.Holder{}, driver.ErrNotSupported
	}
	h, err := ob.Holder(ctx, name)
	if err == nil && d.unsafeMode == "stale-leader" {
		d.prevMu.Lock()
		h, d.prev = d.prev, h
		d.prevMu.Unlock()
	}
	return h, err
}

func (d *recDriver) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	ob, ok := d.inner.(driver.Observer)
	if !ok {
		return nil, driver.ErrNotSupported
	}
	return ob.Observe(ctx, name)
}

// SetValue passes a leader's Proclaim on (driver.ValueSetter).
func (l *recLock) SetValue(ctx context.Context, value string) error {
	l.d.gate.wait()
	vs, ok := l.inner.(driver.ValueSetter)
	if !ok {
		return driver.ErrNotSupported
	}
	return vs.SetValue(ctx, value)
}

func (d *recDriver) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return d.inner.Close()
}

func (l *recLock) watchLost(lost <-chan struct{}) {
	select {
	case <-lost:
		t := check.Now()
		op := check.Op{Client: l.d.client, Lease: l.lease, Kind: check.Lost, Call: t, Return: t, Outcome: check.OK}
		l.d.rec.End(l.d.rec.Begin(op), op)
	case <-l.stop:
	case <-l.d.closed:
	}
}

func (l *recLock) Token() uint64 { return l.inner.Token() }

func (l *recLock) Lost() <-chan struct{} { return l.inner.Lost() }

func (l *recLock) Renew(ctx context.Context) (driver.Validity, error) {
	l.d.gate.wait()
	op := check.Op{Client: l.d.client, Lease: l.lease, Kind: check.Renew, TTL: int64(l.ttl), Call: check.Now()}
	id := l.d.rec.Begin(op)
	v, err := l.inner.Renew(ctx)
	op.Return, op.Outcome, op.Err = check.Now(), outcome(ctx, err), errText(err)
	if op.Outcome == check.Cancelled {
		op.Outcome = check.Unknown // the request may have reached the engine
	}
	if err == nil {
		op.Until = monoUntil(v)
	}
	l.d.rec.End(id, op)
	return v, err
}

func (l *recLock) Release(ctx context.Context) error {
	l.d.gate.wait()
	op := check.Op{Client: l.d.client, Lease: l.lease, Kind: check.Release, Call: check.Now()}
	l.released.CompareAndSwap(0, op.Call)
	id := l.d.rec.Begin(op)
	var err error
	if l.d.unsafeDrop != nil {
		l.d.unsafeDrop(l.name) // by name, as etcd's Unlock did (etcd#22082)
	} else {
		err = l.inner.Release(ctx)
	}
	op.Return, op.Outcome, op.Err = check.Now(), outcome(ctx, err), errText(err)
	if op.Outcome == check.Cancelled {
		op.Outcome = check.Unknown
	}
	if op.Outcome == check.OK {
		// A repeated Release must be safe (driver.Lock): one after a
		// failed attempt may answer that the lock is given up because
		// the earlier attempt, or the driver's retry in the background
		// since (etcdlock's orphan reaper), deleted it, without a round
		// trip of its own. The release took effect at some time after
		// the first attempt began, not necessarily within this call:
		// recorded within this call alone, it would look like the
		// release of a lock the engine had already granted to someone
		// else.
		op.Call = l.released.Load()
	}
	l.d.rec.End(id, op)
	if err == nil || op.Outcome == check.Refused {
		l.once.Do(func() { close(l.stop) })
	}
	return err
}

// monoUntil converts a Validity to the check clock; 0 if it says nothing.
func monoUntil(v driver.Validity) int64 {
	if v.Since.IsZero() || v.TTL <= 0 {
		return 0
	}
	return check.Now() - int64(time.Since(v.Since)) + int64(v.TTL)
}

// gate holds a client's engine requests while the client is "paused": an
// in-process stand-in for SIGSTOP, for engines that live in the process.
// Requests made during the pause go out when it ends, as a stopped
// process's would. A nil gate never holds.
type gate struct {
	mu     sync.Mutex
	closed chan struct{} // non-nil while paused
}

func (g *gate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = make(chan struct{})
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed != nil {
		close(g.closed)
		g.closed = nil
	}
}

func (g *gate) wait() {
	if g == nil {
		return
	}
	g.mu.Lock()
	c := g.closed
	g.mu.Unlock()
	if c != nil {
		<-c
	}
}
