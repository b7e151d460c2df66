package redislock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Elections on a single node. A leader is the exclusive holder of the
// name's lock; its value is kept in PREFIX{NAME}:value as "OWNER VALUE",
// written by the script that grants the lock (from the Request, or from
// the queue's PREFIX{NAME}:values for a waiter granted by a release) and by
// SetValue, with the lock key's TTL. Observers read the holder with
// sholder.lua, which also keeps the marker PREFIX{NAME}:observed alive:
// while it exists, every script that changes the exclusive holder or its
// value publishes on PREFIX{NAME}:holder, and each observer reads again. A
// holder whose key simply expires (a crashed leader) is published by
// nobody: an observer reads again when the hold it last read runs out.
// Keyspace notifications would tell, but they are off by default and a
// server setting this package does not change.

var (
	_ driver.Observer    = (*Driver)(nil)
	_ driver.ValueSetter = (*singleLock)(nil)
)

const (
	// observeRefresh bounds the time between an observer's reads while
	// nothing happens: each read keeps the marker alive for observeMarker,
	// so the scripts keep publishing for a live observer.
	observeRefresh = 20 * time.Second
	observeMarker  = 3 * observeRefresh
	// observeBackoffMax bounds the pause between reads that fail.
	observeBackoffMax = 2 * time.Second
)

// SetValue replaces the value kept with the lock (driver.ValueSetter) if it
// is still this owner's, in one owner-checked script; otherwise it returns
// an error matching driver.ErrLockLost and changes nothing.
func (l *singleLock) SetValue(ctx context.Context, value string) error {
	if l.limit > 0 || l.owner[len(l.owner)-2:] == ":s" {
		return fmt.Errorf("redislock: set the value of %q: %w", l.keys.lock,
			driver.InvalidArgument("lock", "shared or a permit", "an exclusive lock (a value is an election leader's)"))
	}
	// Before the script: a Renew sent after it extends the value too.
	l.valued.Store(true)
	ok, err := l.n.run(ctx, sSetValueScript, l.keys.single(), l.owner, value).Int64()
	if err != nil {
		return l.n.errorf(l.keys.lock, err)
	}
	if ok != 1 {
		return l.lost()
	}
	return nil
}

// electionNode returns the node of a driver that offers elections.
func (d *Driver) electionNode(op, name string) (*node, error) {
	if d.closed.Load() {
		return nil, fmt.Errorf("redislock: %s %q: %w", op, name, driver.ErrClosed)
	}
	s, ok := d.topo.(*single)
	if !ok {
		return nil, fmt.Errorf("redislock: %s %q: %w: leader election with %s", op, name, driver.ErrNotSupported, d.topo.kind())
	}
	return s.n, nil
}

// Holder implements driver.Observer: the exclusive holder of name now, its
// token and value; the zero Holder if nobody holds it exclusively.
func (d *Driver) Holder(ctx context.Context, name string) (driver.Holder, error) {
	n, err := d.electionNode("holder of", name)
	if err != nil {
		return driver.Holder{}, err
	}
	h, _, err := readHolder(ctx, n, d.keysOf(name), 0)
	return h, err
}

// readHolder runs sholder.lua; marker > 0 keeps the observers' marker for
// that long. left is how long the holder's hold has left.
func readHolder(ctx context.Context, n *node, k keys, marker time.Duration) (h driver.Holder, left time.Duration, err error) {
	v, err := n.run(ctx, sHolderScript, k.single(), marker.Milliseconds()).Slice()
	if err == nil {
		var ok1, ok2, ok3 bool
		var tok, ms int64
		if len(v) == 3 {
			tok, ok1 = v[0].(int64)
			h.Value, ok2 = v[1].(string)
			ms, ok3 = v[2].(int64)
		}
		if !ok1 || !ok2 || !ok3 {
			err = fmt.Errorf("unexpected reply %v", v)
		}
		h.Token, left = uint64(max(tok, 0)), time.Duration(ms)*time.Millisecond
	}
	if err != nil {
		return driver.Holder{}, 0, n.errorf(k.lock, err)
	}
	if h.Token == 0 {
		h.Value = ""
	}
	return h, left, nil
}

// Observe implements driver.Observer with the node's pub/sub hub: the
// observer subscribes to PREFIX{NAME}:holder, reads the holder once the
// subscription is confirmed (so no change after the read goes unseen),
// and reads again after each message, after each resubscription (go-redis
// reconnects the pub/sub connection and subscribes again by itself;
// changes in between are read then), when the hold it read runs out, and
// at least every observeRefresh. The first read is made before Observe
// returns, so that what keeps it from ever observing is returned. A read
// that fails for a reason that may pass is tried again after a backoff;
// one that will not pass (the go-redis client closed, a key of another
// type) ends the observation. The channel holds the latest holder not yet
// received, never a backlog, and is closed when ctx ends or the driver is
// closed.
func (d *Driver) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	n, err := d.electionNode("observe", name)
	if err != nil {
		return nil, err
	}
	o := &observer{n: n, k: d.keysOf(name), w: &watcher{wake: make(chan struct{}, 1)}, ch: make(chan driver.Holder, 1)}
	if err := o.start(ctx, d.done); err != nil {
		return nil, fmt.Errorf("redislock: observe %q: %w", name, err)
	}
	d.bg.Go(func() {
		defer close(o.ch)
		defer n.hub.unwatch(o.k.holder, o.w)
		o.run(ctx, d.done)
	})
	return o.ch, nil
}

// observer is one Observe call.
type observer struct {
	n    *node
	k    keys
	w    *watcher
	ch   chan driver.Holder // capacity 1: the latest holder not yet received
	sent driver.Holder
	any  bool          // something was sent
	next time.Duration // until the next read unless woken
}

// start subscribes, waits for the confirmation, and reads the holder.
func (o *observer) start(ctx context.Context, done <-chan struct{}) error {
	confirmed, err := o.n.hub.watch(ctx, o.k.holder, o.w)
	if err != nil {
		if !errors.Is(err, driver.ErrClosed) {
			err = o.n.errorf(o.k.holder, err)
		}
		return err
	}
	t := time.NewTimer(subscribeTimeout)
	defer t.Stop()
	select {
	case <-confirmed:
	case <-ctx.Done():
		err = ctx.Err()
	case <-done:
		err = driver.ErrClosed
	case <-t.C:
		err = driver.Unavailable(fmt.Errorf("redislock: %s: subscription to %q not confirmed within %v",
			o.n.name, o.k.holder, subscribeTimeout))
	}
	if err == nil {
		err = o.read(ctx)
	}
	if err != nil {
		o.n.hub.unwatch(o.k.holder, o.w)
	}
	return err
}

// run reads the holder again whenever the hub wakes the observer or the
// time comes, until ctx ends, the driver closes or a read fails for good.
func (o *observer) run(ctx context.Context, done <-chan struct{}) {
	t := time.NewTimer(o.next)
	defer t.Stop()
	fails := 0
	for {
		select {
		case <-o.w.wake:
		case <-t.C:
		case <-ctx.Done():
			return
		case <-done:
			return
		}
		err := o.read(ctx)
		switch {
		case err == nil:
			fails = 0
		case ctx.Err() != nil || permanent(err):
			return
		default:
			fails++
			d := min(50*time.Millisecond<<min(fails, 6), observeBackoffMax)
			o.next = d/2 + rand.N(d/2+1)
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(o.next)
	}
}

// read reads the holder, keeps the marker alive, sends the holder if it
// changed, and sets when to read next at the latest. Only the observer's
// goroutine sends, so the send after the drain never blocks. Tokens never
// decrease: the reads are one after another on one node, whose fence
// counter only grows (a node that loses its data aside: FencingNode).
func (o *observer) read(ctx context.Context) error {
	h, left, err := readHolder(ctx, o.n, o.k, observeMarker)
	if err != nil {
		return err
	}
	o.next = observeRefresh
	if h.Token != 0 {
		// PTTL counts whole milliseconds, rounded down: read again just
		// after the hold runs out, in case nobody renews it.
		o.next = min(left+time.Millisecond, observeRefresh)
	}
	if o.any && h == o.sent {
		return nil
	}
	o.sent, o.any = h, true
	select {
	case <-o.ch:
	default:
	}
	o.ch <- h
	return nil
}
