package zklock

import (
	"context"
	"errors"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// reconnectWait is how long a TryLock's read that met a dropped connection
// waits before it is sent again: go-zookeeper reconnects at once to another
// server, after a second to the same one; reconnectBound bounds that second
// read, so that an outage is still reported within a few seconds.
const (
	reconnectWait  = 100 * time.Millisecond
	reconnectBound = 2 * time.Second
)

var errEntryGone = errors.New("zklock: our queue node disappeared while waiting (deleted, or the session expired)")

// Acquire queues a node for req.Name and returns the lock once the node
// heads the queue (see the package doc); with req.Wait false it gives up,
// removing the node, if another node is ahead.
func (d *Driver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	select {
	case <-d.closing:
		return nil, driver.Validity{}, driver.ErrClosed
	case <-d.connGone:
		return nil, driver.Validity{}, errConnClosed
	default:
	}
	k, err := requestKind(req)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	d.used.Store(true)
	if err := d.awaitGrant(ctx); err != nil {
		return nil, driver.Validity{}, d.wrapErr(ctx, "learn the session timeout granted", err)
	}
	parent := d.parent(req.Name)
	if !req.Wait {
		// A read answers most failed TryLocks without a write.
		kids, err := d.children(ctx, parent)
		if err != nil && connDropped(err) && ctx.Err() == nil {
			// Perhaps a blip: the request met a connection that had
			// just dropped. A read may be sent again, once, after the
			// moment a reconnect takes; if that fails too (an outage,
			// not a blip), the first error is the answer, at once.
			first := err
			select {
			case <-ctx.Done():
			case <-time.After(reconnectWait):
				rctx, cancel := context.WithTimeout(ctx, reconnectBound)
				if kids, err = d.children(rctx, parent); err != nil {
					err = first
				}
				cancel()
			}
		}
		q := queue(kids)
		switch {
		case err != nil && !errors.Is(err, zk.ErrNoNode):
			return nil, driver.Validity{}, d.wrapErr(ctx, "list "+parent, err)
		case err != nil:
		case k.conflict(q) != nil:
			return nil, driver.Validity{}, k.conflict(q)
		case !k.wouldHold(q):
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
	}
	a := &attempt{d: d, parent: parent, kind: k, guid: guidFor(k), value: []byte(req.Value)}
	l, v, err := a.run(ctx, req.Wait)
	if err != nil {
		a.abandon(ctx)
		return nil, driver.Validity{}, err
	}
	return l, v, nil
}

// attempt is one Acquire's node in one queue.
//
// One goroutine per attempt (runOwn) sends the create, then stats and watches
// the node, and, if the lock is granted, goes on watching it for loss: the
// create, the stat and the watch of a held lock share it. The caller's
// goroutine runs run, which reads the queue and waits for its turn.
type attempt struct {
	d      *Driver
	parent string
	kind   kind
	guid   string // carries kind's marker
	value  []byte // the node's data: an election's value (election.go)
	// Set before start, from what the driver knows of the parent
	// (parents.go): known, the driver has seen it; fresh, make the parent
	// before the create; listAhead, send the queue listing right behind
	// the create.
	known, fresh, listAhead bool

	// Set by runOwn before it closes the channel above them.
	sending   chan struct{} // closed just before the create is sent
	sendAt    time.Time     // taken before sending is closed: no later than the create's send
	created   chan struct{} // closed when the create has an outcome
	node      string        // our node's name under parent, once created
	path      string        // parent/node
	czxid     int64         // our node's czxid from the create's reply; 0 if that reply was lost
	createErr error
	clean     bool          // created by one answered request: exactly one node has our guid
	alone     bool          // the create's reply showed our node the parent's only child (createOnce)
	statDone  chan struct{} // closed when the stat and watch of our node have an outcome
	own       *zk.Stat
	ownWatch  <-chan zk.Event
	ownErr    error

	// run's state: its goroutine alone touches it until decided is closed,
	// after which runOwn reads it.
	sid      int64    // the connection's session before the create was sent
	sess     *session // the session our node lives in, once known
	haveStat bool     // run has taken own and ownWatch (awaitStat)
	// watch is our node's watch as run holds it: ownWatch, then the watch
	// re-armed after a data change, nil once it fired otherwise or failed.
	watch <-chan zk.Event
	// proof is the transaction that shows our node and session alive at the
	// leader after its send time, which a grant's validity counts from (see
	// quorum.go): nil for the create itself, until we have waited; then the
	// create still, while it was sent less than reportLag ago (answered,
	// clean), and after that a check of our node sent alongside each read
	// that may grant.
	proof   *quorumCheck
	held    *zkLock       // the lock granted, if any
	decided chan struct{} // closed when run returns
}

// run waits until our node heads the queue, and returns the lock; or until
// it cannot (an error, a TryLock behind someone, ctx done). Each round reads
// the queue, finds our node in it, and either takes the lock or waits for
// a node ahead of ours to go (the one just ahead, or two ahead: blockers in
// modes.go).
func (a *attempt) run(ctx context.Context, wait bool) (l *zkLock, v driver.Validity, err error) {
	a.sid = a.d.conn.SessionID()
	facts, known := a.d.parents.lookup(a.parent)
	a.known = known
	a.fresh = a.d.parents.guessMissing(known)
	a.listAhead = known && facts.company
	a.start()
	defer func() {
		a.held = l
		close(a.decided)
	}()
	// Where the queue had company at our last create, the listing is sent
	// right behind the create, on the same connection: the server answers
	// a session's requests in order, so it normally sees our node, and
	// Lock costs the create's round trip alone. Elsewhere the create's
	// reply tells whether a listing is needed at all.
	<-a.sending
	var kids []string
	var kerr error
	if a.listAhead {
		kids, kerr = a.d.children(ctx, a.parent)
	}
	if err := a.awaitCreate(ctx); err != nil {
		return nil, driver.Validity{}, err
	}
	if a.alone && a.clean {
		// Our node was the only one in its queue at the create's zxid
		// (createOnce): nothing is ahead, and the create, a transaction
		// a quorum committed, is the grant's proof, as when a listing
		// shows our node first. One answered request made it, so no
		// other node carries our guid.
		if err := a.bindSession(ctx); err != nil {
			return nil, driver.Validity{}, err
		}
		hook(testHooks.aloneGrant)
		return a.grant(ctx)
	}
	pipelined := a.listAhead
	if !pipelined {
		kids, kerr = a.d.children(ctx, a.parent)
	}
	for {
		q, idx, err := a.position(ctx, kids, kerr, pipelined)
		if err != nil {
			return nil, driver.Validity{}, err
		}
		if idx < 0 {
			// The pipelined listing overtook the create: read again.
			hook(testHooks.pipelineMiss)
			pipelined = false
			kids, kerr = a.d.children(ctx, a.parent)
			continue
		}
		pipelined = false
		if err := a.bindSession(ctx); err != nil {
			return nil, driver.Validity{}, err
		}
		if err := a.kind.conflict(q[:idx]); err != nil {
			return nil, driver.Validity{}, err
		}
		blockers, last := a.kind.blockers(q, idx)
		if len(blockers) == 0 {
			return a.grant(ctx)
		}
		if !wait {
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
		gone, breaks, err := a.awaitAhead(ctx, blockers, last)
		if err != nil {
			return nil, driver.Validity{}, err
		}
		if gone && last && a.ownIntact(ctx, breaks) && !a.sess.ended() &&
			time.Since(a.proof.sent) < a.d.ttl()/4 {
			// One deletion among the nodes we waited for was all we needed
			// at our last read, and no node can later be created with a
			// lower sequence than ours: we hold, and the token is known, so
			// no read is needed.
			l, v, err := a.grant(ctx)
			switch {
			case err == nil:
				hook(testHooks.readlessGrant)
				return l, v, nil
			case errors.Is(err, errEntryGone), errors.Is(err, errSessionEnded), ctx.Err() != nil:
				return nil, driver.Validity{}, err
			}
			// The check failed on the way (a dropped connection): read and
			// check again.
		}
		// The check sent with the watch proves a grant by this read too, if
		// it is recent and has not failed.
		if !a.proof.usable(a.d.reportLag()) {
			a.proof = a.d.startCheck(a.nodePath())
		}
		kids, kerr = a.d.children(ctx, a.parent)
	}
}

// awaitCreate waits for the create's outcome.
func (a *attempt) awaitCreate(ctx context.Context) error {
	select {
	case <-a.created:
	case <-ctx.Done():
		return ctx.Err()
	}
	if a.createErr != nil {
		return a.d.wrapErr(ctx, "create queue node under "+a.parent, a.createErr)
	}
	return nil
}

// position finds our node in a listing of the queue (kids, or the
// listing's error kerr) and returns the queue and our index in it. Another
// node with our guid, a create applied after its connection dropped and
// found by neither lookup, is removed. Only the first listing, sent
// pipelined behind the create, may miss our node without an error (idx
// -1): it may have overtaken the create.
func (a *attempt) position(ctx context.Context, kids []string, kerr error, pipelined bool) ([]entry, int, error) {
	d := a.d
	if kerr != nil && !(pipelined && errors.Is(kerr, zk.ErrNoNode)) {
		return nil, -1, d.wrapErr(ctx, "read queue "+a.parent, kerr)
	}
	q := queue(kids)
	idx := -1
	for i, e := range q {
		switch {
		case e.name == a.node:
			idx = i
		case e.guid == a.guid:
			d.removeAsync(a.parent, "", a.parent+"/"+e.name)
		}
	}
	if idx < 0 && !pipelined {
		if a.sid != d.conn.SessionID() {
			// Gone with the session it was made in.
			return nil, -1, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
		}
		return nil, -1, errEntryGone
	}
	return q, idx, nil
}

// bindSession learns, once, which session our node lives in, and fails if
// that session has ended.
func (a *attempt) bindSession(ctx context.Context) error {
	d := a.d
	if a.sess == nil {
		if a.sid != 0 && d.conn.SessionID() == a.sid {
			// The connection had session sid before the create was
			// sent and still has it after both replies, and a
			// session id never comes back: the node is sid's.
			a.sess = d.bind(a.sid)
		} else {
			if err := a.awaitStat(ctx); err != nil {
				return d.wrapErr(ctx, "stat "+a.node, err)
			}
			a.sess = d.sessionOf(a.own.EphemeralOwner)
		}
	}
	if a.sess.ended() {
		return d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
	}
	return nil
}

// grant takes the lock, our node heading the queue, once a.proof has
// proven it (see proven). The token is our node's czxid.
func (a *attempt) grant(ctx context.Context) (*zkLock, driver.Validity, error) {
	since, err := a.proven(ctx)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	token := a.czxid
	if token == 0 {
		// The create's reply was lost: the stat has the czxid.
		if err := a.awaitStat(ctx); err != nil {
			return nil, driver.Validity{}, a.d.wrapErr(ctx, "stat "+a.node, err)
		}
		token = a.own.Czxid
	}
	l := &zkLock{
		d: a.d, path: a.nodePath(), token: uint64(token), sess: a.sess,
		floor: a.d.provenTTL(a.sess.id, since),
	}
	return l, driver.Validity{Since: since, TTL: l.floor}, nil
}

// awaitStat takes the stat and watch of our node from runOwn, once.
func (a *attempt) awaitStat(ctx context.Context) error {
	if a.haveStat {
		return nil
	}
	select {
	case <-a.statDone:
	case <-ctx.Done():
		return ctx.Err()
	}
	if a.ownErr != nil {
		return a.ownErr
	}
	a.haveStat, a.watch = true, a.ownWatch
	return nil
}

// proven waits for the proof of a grant (a.proof; nil: the create) and
// returns the time the grant's validity counts from.
func (a *attempt) proven(ctx context.Context) (time.Time, error) {
	proof := a.proof
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
// fired own watch is consumed here as awaitAhead would.
func (a *attempt) ownIntact(ctx context.Context, breaks int64) bool {
	if a.watch == nil || a.d.breaks.Load() != breaks || a.d.conn.State() != zk.StateHasSession {
		return false
	}
	select {
	case ev, ok := <-a.watch:
		a.watch = nil
		if ok && ev.Type == zk.EventNodeDataChanged {
			a.watch = a.rewatch(ctx)
		}
		return false
	default:
		return true
	}
}

func (a *attempt) rewatch(ctx context.Context) <-chan zk.Event {
	n, err := a.d.exists(ctx, a.nodePath(), true)
	if err != nil || !n.exists {
		return nil
	}
	return n.watch
}

// nodePath is our node's path, once created: one string, shared by the
// lock, the driver's and go-zookeeper's watch records.
func (a *attempt) nodePath() string { return a.path }
