package zklock

import (
	"context"
	"errors"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

var errEntryGone = errors.New("zklock: our queue node disappeared while waiting (deleted, or the session expired)")

func (d *zkDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	select {
	case <-d.closing:
		return nil, driver.Validity{}, driver.ErrClosed
	case <-d.connGone:
		return nil, driver.Validity{}, errConnClosed
	default:
	}
	d.used.Store(true)
	if err := d.awaitGrant(ctx); err != nil {
		return nil, driver.Validity{}, d.wrapErr(ctx, "learn the session timeout granted", err)
	}
	parent := d.parent(req.Name)
	if !req.Wait {
		// A read answers most failed TryLocks without a write.
		kids, err := d.children(ctx, parent)
		switch {
		case err == nil && len(queue(kids)) > 0:
			return nil, driver.Validity{}, driver.ErrNotAcquired
		case err != nil && !errors.Is(err, zk.ErrNoNode):
			return nil, driver.Validity{}, d.wrapErr(ctx, "list "+parent, err)
		}
	}
	a := &attempt{d: d, parent: parent, guid: newGUID()}
	l, v, err := a.run(ctx, req.Wait)
	if err != nil {
		a.abandon()
		return nil, driver.Validity{}, err
	}
	return l, v, nil
}

// attempt is one Acquire's node in one queue.
//
// One goroutine per attempt (runOwn) sends the create, then stats and watches
// the node, and, if the lock is granted, goes on watching it for loss: the
// create, the stat and the watch of a held lock share it.
type attempt struct {
	d      *zkDriver
	parent string
	guid   string

	sending   chan struct{} // closed just before the create is sent
	sendAt    time.Time     // taken before sending is closed: no later than the create's send
	created   chan struct{} // closed when the create has an outcome
	node      string        // our node's name under parent, once created
	czxid     int64         // our node's czxid from the create's reply; 0 if that reply was lost
	createErr error
	clean     bool // created by one answered request: exactly one node has our guid

	statDone chan struct{} // closed when the stat and watch of our node have an outcome
	own      *zk.Stat
	ownWatch <-chan zk.Event
	ownErr   error

	// Set by run before it closes decided.
	decided   chan struct{}
	held      *zkLock
	tookWatch bool // run consumed ownWatch while waiting; heldWatch replaces it
	heldWatch <-chan zk.Event
}

func (a *attempt) run(ctx context.Context, wait bool) (_ *zkLock, _ driver.Validity, err error) {
	d := a.d
	sid := d.conn.SessionID()
	a.start()
	var (
		l        *zkLock
		ownWatch <-chan zk.Event
		haveStat bool
	)
	defer func() {
		if err == nil {
			a.held = l
			a.tookWatch, a.heldWatch = haveStat, ownWatch
		}
		close(a.decided)
	}()
	// The listing is sent right behind the create, on the same connection:
	// the server answers a session's requests in order, so it normally sees
	// our node, and Lock costs the create's round trip alone.
	<-a.sending
	kids, kerr := d.children(ctx, a.parent)
	select {
	case <-a.created:
	case <-ctx.Done():
		return nil, driver.Validity{}, ctx.Err()
	}
	if a.createErr != nil {
		return nil, driver.Validity{}, d.wrapErr(ctx, "create queue node under "+a.parent, a.createErr)
	}
	awaitStat := func() error {
		if !haveStat {
			select {
			case <-a.statDone:
			case <-ctx.Done():
				return ctx.Err()
			}
			if a.ownErr != nil {
				return a.ownErr
			}
			haveStat, ownWatch = true, a.ownWatch
		}
		return nil
	}
	var sess *session
	// proof is the transaction that shows our node and session alive at the
	// leader after its send time, which a grant's validity counts from (see
	// quorum.go): the create itself until we have waited, then a check of
	// our node sent alongside each read that may grant.
	var proof *quorumCheck
	pipelined := true
	for {
		if kerr != nil && !(pipelined && errors.Is(kerr, zk.ErrNoNode)) {
			return nil, driver.Validity{}, d.wrapErr(ctx, "read queue "+a.parent, kerr)
		}
		q := queue(kids)
		idx := -1
		for i, e := range q {
			switch {
			case e.name == a.node:
				idx = i
			case e.guid == a.guid:
				// A create applied after its connection dropped and
				// found by neither lookup: ours, so remove it.
				d.removeAsync(a.parent, "", a.parent+"/"+e.name)
			}
		}
		if idx < 0 {
			if !pipelined {
				if sid != d.conn.SessionID() {
					// Gone with the session it was made in.
					return nil, driver.Validity{}, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
				}
				return nil, driver.Validity{}, errEntryGone
			}
			// The listing overtook the create: read again.
			hook(testHooks.pipelineMiss)
			pipelined = false
			kids, kerr = d.children(ctx, a.parent)
			continue
		}
		pipelined = false
		if sess == nil {
			if sid != 0 && d.conn.SessionID() == sid {
				// The connection had session sid before the create was
				// sent and still has it after both replies, and a
				// session id never comes back: the node is sid's.
				sess = d.bind(sid)
			} else {
				if err := awaitStat(); err != nil {
					return nil, driver.Validity{}, d.wrapErr(ctx, "stat "+a.node, err)
				}
				sess = d.sessionOf(a.own.EphemeralOwner)
			}
		}
		if sess.ended() {
			return nil, driver.Validity{}, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
		}
		if idx == 0 {
			since, err := a.proven(ctx, proof)
			if err != nil {
				return nil, driver.Validity{}, err
			}
			token := a.czxid
			if token == 0 {
				// The create's reply was lost: the stat has the czxid.
				if err := awaitStat(); err != nil {
					return nil, driver.Validity{}, d.wrapErr(ctx, "stat "+a.node, err)
				}
				token = a.own.Czxid
			}
			l = &zkLock{
				d: d, path: a.parent + "/" + a.node, token: uint64(token), sess: sess,
				lost: make(chan struct{}), released: make(chan struct{}), floor: d.provenTTL(sess.id, since),
			}
			return l, driver.Validity{Since: since, TTL: l.floor}, nil
		}
		if !wait {
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
		if err := awaitStat(); err != nil {
			return nil, driver.Validity{}, d.wrapErr(ctx, "stat "+a.node, err)
		}
		if a.own.EphemeralOwner != sess.id {
			return nil, driver.Validity{}, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
		}
		pred := a.parent + "/" + q[idx-1].name
		breaks := d.breaks.Load()
		// The check goes out with the watch and is answered while we wait,
		// off the hand-off's path.
		proof = d.startCheck(a.parent + "/" + a.node)
		watchSent := proof.sent
		p, err := d.exists(ctx, pred, true)
		if err != nil {
			return nil, driver.Validity{}, d.wrapErr(ctx, "watch "+pred, err)
		}
		predGone := !p.exists
		if p.exists {
			select {
			case ev, open := <-p.watch:
				// Only a deletion is a grant: a session event or a data
				// change of the predecessor means re-read.
				predGone = open && ev.Type == zk.EventNodeDeleted
			case ev, ok := <-ownWatch:
				// Our node changed or went: re-read the queue to find out.
				if !ok || ev.Type != zk.EventNodeDataChanged {
					ownWatch = nil
				} else {
					ownWatch = a.rewatch(ctx)
				}
			case <-ctx.Done():
				return nil, driver.Validity{}, ctx.Err()
			case <-sess.lost:
				return nil, driver.Validity{}, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
			case <-d.closing:
				return nil, driver.Validity{}, driver.ErrClosed
			}
		} // else gone between the two reads; the exists-watch stays armed harmlessly
		if predGone && idx == 1 && a.ownIntact(ctx, &ownWatch, breaks) && !sess.ended() &&
			time.Since(watchSent) < d.ttl()/4 {
			// The predecessor was the only node ahead at our last read, and
			// no node can later be created with a lower sequence than ours:
			// we are the head, and the token is known, so no read is needed.
			since, err := a.proven(ctx, proof)
			switch {
			case err == nil:
				token := a.czxid
				if token == 0 {
					token = a.own.Czxid
				}
				l = &zkLock{
					d: d, path: a.parent + "/" + a.node, token: uint64(token), sess: sess,
					lost: make(chan struct{}), released: make(chan struct{}), floor: d.provenTTL(sess.id, since),
				}
				hook(testHooks.readlessGrant)
				return l, driver.Validity{Since: since, TTL: l.floor}, nil
			case errors.Is(err, errEntryGone), errors.Is(err, errSessionEnded), ctx.Err() != nil:
				return nil, driver.Validity{}, err
			}
			// The check failed on the way (a dropped connection): read and
			// check again.
		}
		// The check sent with the watch proves a grant by this read too, if
		// it is recent and has not failed.
		if !proof.usable(d.reportLag()) {
			proof = d.startCheck(a.parent + "/" + a.node)
		}
		kids, kerr = d.children(ctx, a.parent)
	}
}

// proven waits for the proof of a grant (nil: the create) and returns the
// time the grant's validity counts from.
func (a *attempt) proven(ctx context.Context, proof *quorumCheck) (time.Time, error) {
	if proof == nil {
		return a.sendAt, nil
	}
	err := proof.wait(ctx)
	switch {
	case err == nil:
		return proof.sent, nil
	case errors.Is(err, zk.ErrNoNode):
		return time.Time{}, errEntryGone
	case errors.Is(err, zk.ErrSessionExpired):
		return time.Time{}, a.d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
	}
	return time.Time{}, a.d.wrapErr(ctx, "check "+a.node, err)
}

// ownIntact reports whether our node is known to be there and ours when
// the predecessor's deletion is seen, with no read: its watch is armed and
// has not fired. The server sends a session's events in zxid order, so a
// deletion of our node before the predecessor's would already be in the
// channel; that order holds only within one connection, hence breaks. A
// fired own watch is consumed here as run's select would.
func (a *attempt) ownIntact(ctx context.Context, ownWatch *<-chan zk.Event, breaks int64) bool {
	if *ownWatch == nil || a.d.breaks.Load() != breaks || a.d.conn.State() != zk.StateHasSession {
		return false
	}
	select {
	case ev, ok := <-*ownWatch:
		*ownWatch = nil
		if ok && ev.Type == zk.EventNodeDataChanged {
			*ownWatch = a.rewatch(ctx)
		}
		return false
	default:
		return true
	}
}

func (a *attempt) rewatch(ctx context.Context) <-chan zk.Event {
	n, err := a.d.exists(ctx, a.parent+"/"+a.node, true)
	if err != nil || !n.exists {
		return nil
	}
	return n.watch
}

// start launches runOwn. The create runs on even if the caller gives up, so
// that abandon knows what to remove.
func (a *attempt) start() {
	a.sending = make(chan struct{})
	a.created = make(chan struct{})
	a.statDone = make(chan struct{})
	a.decided = make(chan struct{})
	a.d.bg.Add(1)
	go a.runOwn()
}

// runOwn creates our node, stats and watches it (pipelined behind the queue
// listing, off the caller's path), and, once run has decided, watches the
// granted lock for loss.
func (a *attempt) runOwn() {
	d := a.d
	defer d.bg.Done()
	a.sendAt = time.Now()
	close(a.sending)
	a.node, a.czxid, a.clean, a.createErr = d.createNode(a.parent, a.guid)
	close(a.created)
	if a.createErr != nil {
		a.ownErr = a.createErr
		close(a.statDone)
		return
	}
	ok, st, w, err := d.conn.ExistsW(a.parent + "/" + a.node)
	switch {
	case err != nil:
		a.ownErr = err
	case !ok:
		a.ownErr = errEntryGone
	default:
		a.own, a.ownWatch = st, w
	}
	close(a.statDone)
	<-a.decided
	l := a.held
	if l == nil {
		return
	}
	switch {
	case errors.Is(a.ownErr, errEntryGone):
		l.markLost()
		return
	case a.ownErr == nil && a.own.EphemeralOwner != l.sess.id:
		l.markLost()
		return
	}
	// After a connection error the watch is nil: Renew and the session
	// decide.
	w = a.ownWatch
	if a.tookWatch {
		w = a.heldWatch
	}
	l.watch(w)
}
