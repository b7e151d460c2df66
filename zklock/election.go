package zklock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// Elections (Capabilities.Election). A leader is a writer that holds the
// lock of the election's name, on the mutex's path unchanged; its value is
// its queue node's data, written by the create that queues it (so the value
// is there from the moment the node heads the queue) and replaced by
// SetValue. Holder and Observe read the head of the queue: the writer there,
// its czxid (the term) and its data; nobody if the queue is empty or headed
// by a reader or a permit.
//
// Curator's LeaderLatch once had two leaders at once after a reconnect
// (CURATOR-696): it took a node that its previous, expired session had
// left for its own. Here a node counts as ours only once its ephemeral
// owner is our live session (attempt.bindSession, awaitAhead, runOwn), and
// every grant after a wait (by its create, if recent, or a check),
// renewal and SetValue is proven by a transaction of the node at the
// leader (quorum.go).

// maxValue bounds a value: ZooKeeper drops the connection of a request
// larger than its jute.maxbuffer (1 MiB by default) rather than answering
// it, which a client would take for an outage and retry.
const maxValue = 1_000_000

const valueBound = "at most 1,000,000 bytes (ZooKeeper's requests are bounded by jute.maxbuffer, 1 MiB by default)"

var (
	_ driver.ValueSetter = (*zkLock)(nil)
	_ driver.Observer    = (*Driver)(nil)
	_ driver.Observer    = (*perTTL)(nil)
)

// SetValue replaces our node's data in a multi with a check of the node: a
// transaction, so the leader checks the session and the node and a quorum
// logs the change before anyone answers (quorum.go); a server cut off from
// the quorum cannot answer it. The node's path carries our guid and
// sequence number, so a node there is ours: gone, nothing changes.
func (l *zkLock) SetValue(ctx context.Context, value string) error {
	if len(value) > maxValue {
		return driver.InvalidArgument("zklock: Value", fmt.Sprintf("%d bytes", len(value)), valueBound)
	}
	if l.sess.ended() {
		return fmt.Errorf("%w: %w", driver.ErrLockLost, errSessionEnded)
	}
	switch {
	case l.isLost():
		return fmt.Errorf("%w: node %s is gone", driver.ErrLockLost, l.path)
	case l.isReleased():
		return fmt.Errorf("%w: node %s was released", driver.ErrLockLost, l.path)
	}
	_, err := call(ctx, l.d, func() (struct{}, error) {
		_, err := l.d.conn.Multi(
			&zk.CheckVersionRequest{Path: l.path, Version: -1},
			&zk.SetDataRequest{Path: l.path, Data: []byte(value), Version: -1},
		)
		return struct{}{}, err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, zk.ErrSessionExpired):
		return fmt.Errorf("%w: %w", driver.ErrLockLost, err)
	case errors.Is(err, zk.ErrNoNode):
		return fmt.Errorf("%w: node %s is gone", driver.ErrLockLost, l.path)
	}
	// Unknown outcome (no answer): the value is the old one or the new.
	return l.d.wrapErr(ctx, "set the value of "+l.path, err)
}

// Holder returns the writer at the head of name's queue as the quorum
// knows it: a transaction (a check of the root) goes first, and the read
// that follows on the same session sees at least the state it was
// committed in, so a server cut off from the quorum cannot answer with a
// leader the quorum has already replaced.
func (d *Driver) Holder(ctx context.Context, name string) (driver.Holder, error) {
	if err := d.usable(); err != nil {
		return driver.Holder{}, err
	}
	parent := d.parent(name)
	if err := d.syncQuorum(ctx); err != nil {
		return driver.Holder{}, err
	}
	for {
		r, again, err := d.readHolder(ctx, parent, false, holderRead{})
		if err != nil || !again {
			return r.h, err
		}
	}
}

// usable fails once the driver is closed or its borrowed connection is.
func (d *Driver) usable() error {
	select {
	case <-d.closing:
		return driver.ErrClosed
	case <-d.connGone:
		return errConnClosed
	default:
		return nil
	}
}

// syncQuorum sends a transaction and waits for its answer: a check of the
// root, which fails harmlessly if no lock ever made it.
func (d *Driver) syncQuorum(ctx context.Context) error {
	_, err := call(ctx, d, func() (struct{}, error) { return struct{}{}, d.checkNode(d.root) })
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		return d.wrapErr(ctx, "check "+d.root, err)
	}
	return nil
}

// holderRead is one read of a queue's holder, with the watches armed by it
// when asked: kids fires when the queue (or the parent's existence)
// changes, data when the head writer's node changes (nil if none).
type holderRead struct {
	h          driver.Holder
	head       string // the head writer's node name, if any
	kids, data <-chan zk.Event
}

// readHolder reads the head of the queue under parent and, if it is a
// writer, its node's data. again: the head went between the two reads.
// prev is the previous read: if its head is still the head and its data
// watch has not fired, the node's data is unchanged and is not read again
// (nor another data watch armed on it, one per change of the queue).
func (d *Driver) readHolder(ctx context.Context, parent string, watch bool, prev holderRead) (r holderRead, again bool, err error) {
	type listing struct {
		kids   []string
		w      <-chan zk.Event
		exists bool
	}
	ls, err := call(ctx, d, func() (ls listing, err error) {
		if !watch {
			ls.kids, _, err = d.conn.Children(parent)
			if errors.Is(err, zk.ErrNoNode) {
				return ls, nil
			}
			return ls, err
		}
		ls.kids, _, ls.w, err = d.conn.ChildrenW(parent)
		if errors.Is(err, zk.ErrNoNode) {
			// No queue yet (or any more): watch for its creation.
			ls.exists, _, ls.w, err = d.conn.ExistsW(parent)
			if ls.exists {
				err = errRaced // created between the two reads
			}
		}
		return ls, err
	})
	switch {
	case errors.Is(err, errRaced):
		return r, true, nil
	case err != nil:
		return r, false, d.wrapErr(ctx, "list "+parent, err)
	}
	r.kids = ls.w
	q := queue(ls.kids)
	if len(q) == 0 || q[0].kind != (kind{}) {
		return r, false, nil // nobody, or readers or permits
	}
	if watch && prev.head == q[0].name && prev.data != nil && len(prev.data) == 0 {
		// go-zookeeper's watch channels have room for their one event.
		r.h, r.head, r.data = prev.h, prev.head, prev.data
		return r, false, nil
	}
	head := parent + "/" + q[0].name
	type node struct {
		data []byte
		stat *zk.Stat
		w    <-chan zk.Event
	}
	n, err := call(ctx, d, func() (n node, err error) {
		if watch {
			n.data, n.stat, n.w, err = d.conn.GetW(head)
		} else {
			n.data, n.stat, err = d.conn.Get(head)
		}
		return n, err
	})
	switch {
	case errors.Is(err, zk.ErrNoNode):
		return r, true, nil
	case err != nil:
		return r, false, d.wrapErr(ctx, "read "+head, err)
	}
	r.h = driver.Holder{Token: uint64(n.stat.Czxid), Value: string(n.data)}
	r.head, r.data = q[0].name, n.w
	return r, false, nil
}

var errRaced = errors.New("zklock: the queue changed between two reads")

// Observe reads name's holder as Holder does (its first read proven at the
// quorum, so that an error such as a refused ACL is returned here), then
// follows it with watches: a child watch on the queue (a watch for the
// queue's creation while there is none) and a data watch on the head
// writer's node; each firing re-reads and re-arms them. go-zookeeper keeps
// the watches across reconnections to the same session (the server fires
// those whose nodes changed meanwhile); a new session drops them, and the
// observer reads again, proven at the quorum again.
func (d *Driver) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	o := &observer{d: d, parent: d.parent(name), ch: make(chan driver.Holder, 1)}
	if err := d.syncQuorum(ctx); err != nil {
		return nil, err
	}
	r, err := o.read(ctx, holderRead{})
	if err != nil {
		return nil, err
	}
	o.send(r.h)
	octx, cancel := context.WithCancel(ctx)
	d.bg.Add(2)
	go func() {
		defer d.bg.Done()
		select {
		case <-d.closing:
		case <-d.connGone:
		case <-octx.Done():
		}
		cancel()
	}()
	go o.run(octx, cancel, r)
	return o.ch, nil
}

// observer is one Observe's goroutine and its channel.
type observer struct {
	d      *Driver
	parent string
	ch     chan driver.Holder // capacity 1: the latest holder, never a backlog

	sent bool
	last driver.Holder // the holder last sent
	top  uint64        // the highest token sent
}

// read reads the holder with watches, until a read is not overtaken by the
// head's deletion.
func (o *observer) read(ctx context.Context, prev holderRead) (holderRead, error) {
	for {
		r, again, err := o.d.readHolder(ctx, o.parent, true, prev)
		if err != nil || !again {
			return r, err
		}
	}
}

// send replaces the unread holder, if any, with h, unless h is the holder
// last sent or a token below one sent (a server behind the one that
// answered before: its watch fires once it catches up). Only run sends, so
// the send after the drain never blocks.
func (o *observer) send(h driver.Holder) {
	if (o.sent && h == o.last) || (h.Token != 0 && h.Token < o.top) {
		return
	}
	select {
	case <-o.ch:
	default:
	}
	o.ch <- h
	o.sent, o.last, o.top = true, h, max(o.top, h.Token)
}

// run waits for a watch to fire and reads again, until ctx ends (the
// caller's, or the driver's close). A failed read is retried with backoff:
// go-zookeeper holds a request until it has a connection, so the retries
// are few while it reconnects.
func (o *observer) run(ctx context.Context, cancel context.CancelFunc, r holderRead) {
	defer o.d.bg.Done()
	defer close(o.ch)
	defer cancel()
	backoff := removeBackoff
	for {
		var ev zk.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-r.kids:
		case ev = <-r.data:
			r.data = nil
		}
		prove := ev.Type == zk.EventNotWatching // the session ended: the watches with it
		if prove {
			r = holderRead{}
		}
		for {
			var err error
			if prove {
				err = o.d.syncQuorum(ctx)
			}
			if err == nil {
				r, err = o.read(ctx, r)
			}
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				break
			}
			prove = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, removeBackoffMax)
		}
		backoff = removeBackoff
		o.send(r.h)
	}
}

// Holder asks the newest session (see Status).
func (p *perTTL) Holder(ctx context.Context, name string) (driver.Holder, error) {
	d, err := p.observing()
	if err != nil {
		return driver.Holder{}, err
	}
	return d.Holder(ctx, name)
}

// Observe observes on the newest session, which is then kept open.
func (p *perTTL) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	d, err := p.observing()
	if err != nil {
		return nil, err
	}
	return d.Observe(ctx, name)
}

// observing returns the newest session, marked used: Dial's first session
// is closed only if nothing used it.
func (p *perTTL) observing() (*Driver, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, driver.ErrClosed
	}
	p.latest.used.Store(true)
	return p.latest, nil
}
