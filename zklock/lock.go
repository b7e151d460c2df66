package zklock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// cleanupWait bounds how long a failed Acquire waits for its node to be
// removed before returning; the removal goes on in the background.
const cleanupWait = 2 * time.Second

// The background removal of a node whose delete failed retries with this
// backoff until the node is gone. It never gives up while the driver lives:
// a node left behind lives as long as its session, and a session that
// rides out an outage (or one of no quorum, which freezes expiry) would
// keep it, and block its queue, for as long as the driver runs.
const (
	removeBackoff    = 50 * time.Millisecond
	removeBackoffMax = time.Second
)

var errEntryGone = errors.New("zklock: our queue node disappeared while waiting (deleted, or the session expired)")

// recovered counts creates whose reply was lost and whose node was found
// again by its guid (for tests).
var recovered atomic.Int64

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
		kids, err := call(ctx, d, func() ([]string, error) { k, _, err := d.conn.Children(parent); return k, err })
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

// wrapErr returns ctx's error as itself and tags engine errors: those
// that may pass are marked driver.Unavailable, so that a blocking Lock
// retries them.
func (d *zkDriver) wrapErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return ctx.Err()
	}
	select {
	case <-d.closing:
		return driver.ErrClosed
	case <-d.connGone:
		if !errors.Is(err, errConnClosed) {
			return fmt.Errorf("zklock: %s: %w (%w)", what, errConnClosed, err)
		}
	default:
	}
	if errors.Is(err, errConnClosed) {
		return fmt.Errorf("zklock: %s: %w", what, err)
	}
	e := fmt.Errorf("zklock: %s: %w", what, err)
	if transient(err) {
		return driver.Unavailable(e)
	}
	return e
}

// transient reports whether err may pass with the connection: no server
// reachable, the connection dropped (go-zookeeper reconnects), or the
// session expired (go-zookeeper makes a new one, and Acquire works on it).
// What the server decided (no auth, bad arguments, ...) is not.
func transient(err error) bool {
	for _, t := range []error{
		zk.ErrNoServer, zk.ErrConnectionClosed, zk.ErrSessionExpired, zk.ErrSessionMoved,
		errSessionEnded, errDisconnected, io.EOF, io.ErrUnexpectedEOF,
	} {
		if errors.Is(err, t) {
			return true
		}
	}
	// go-zookeeper hands a failed socket write to the request as it is
	// ("write tcp ...: connection reset by peer").
	var ne net.Error
	return errors.As(err, &ne)
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

// pipelineMisses counts first queue reads the server answered before the
// create (the send order of two goroutines is not guaranteed), which cost
// one more read (for tests and BENCH_NOTES.md).
var pipelineMisses atomic.Int64

// readlessGrants counts grants taken on the sole predecessor's deletion
// without reading the queue (for tests).
var readlessGrants atomic.Int64

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
	sent := time.Now()
	kids, kerr := a.list(ctx)
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
			pipelineMisses.Add(1)
			pipelined = false
			sent = time.Now()
			kids, kerr = a.list(ctx)
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
				lost: make(chan struct{}), released: make(chan struct{}),
			}
			return l, driver.Validity{Since: sent, TTL: d.ttl()}, nil
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
		watchSent := time.Now()
		ok, _, predWatch, err := call3(ctx, d, func() (bool, *zk.Stat, <-chan zk.Event, error) { return d.conn.ExistsW(pred) })
		if err != nil {
			return nil, driver.Validity{}, d.wrapErr(ctx, "watch "+pred, err)
		}
		predGone := !ok
		if ok {
			select {
			case ev, open := <-predWatch:
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
			token := a.czxid
			if token == 0 {
				token = a.own.Czxid
			}
			l = &zkLock{
				d: d, path: a.parent + "/" + a.node, token: uint64(token), sess: sess,
				lost: make(chan struct{}), released: make(chan struct{}),
			}
			readlessGrants.Add(1)
			return l, driver.Validity{Since: watchSent, TTL: d.ttl()}, nil
		}
		sent = time.Now()
		kids, kerr = a.list(ctx)
	}
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

func (a *attempt) list(ctx context.Context) ([]string, error) {
	return call(ctx, a.d, func() ([]string, error) { k, _, err := a.d.conn.Children(a.parent); return k, err })
}

func (a *attempt) rewatch(ctx context.Context) <-chan zk.Event {
	ok, _, w, err := call3(ctx, a.d, func() (bool, *zk.Stat, <-chan zk.Event, error) {
		return a.d.conn.ExistsW(a.parent + "/" + a.node)
	})
	if err != nil || !ok {
		return nil
	}
	return w
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

// createNode creates a protected ephemeral-sequential node and returns its
// name and czxid (0 if unknown). clean is false when a reply was lost on
// the way.
//
// The create goes in a multi with an unconditional empty write to the
// parent's data: go-zookeeper has no create2, and the parent's stat in the
// multi's reply carries mzxid = the transaction's zxid = our node's czxid,
// the token, with no read after the create.
func (d *zkDriver) createNode(parent, guid string) (name string, czxid int64, clean bool, err error) {
	prefix := parent + "/" + nodePrefix(guid)
	clean = true
	for range 5 {
		name, czxid, err = d.createOnce(parent, prefix)
		switch {
		case err == nil:
			return name, czxid, clean, nil
		case errors.Is(err, zk.ErrNoNode):
			if err = d.ensure(parent); err != nil {
				return "", 0, clean, fmt.Errorf("create %s: %w", parent, err)
			}
		case errors.Is(err, zk.ErrConnectionClosed):
			// The request may have been applied with its reply lost: look
			// for our guid before creating again (samuel/go-zookeeper#229).
			clean = false
			if found, ferr := d.findOwn(parent, guid); ferr == nil && found != "" {
				recovered.Add(1)
				return found, 0, clean, nil
			}
		default:
			return "", 0, clean, err
		}
		select {
		case <-d.closing:
			return "", 0, clean, driver.ErrClosed
		default:
		}
	}
	return "", 0, clean, err
}

func (d *zkDriver) createOnce(parent, prefix string) (string, int64, error) {
	if !d.plainCreate.Load() {
		res, err := d.conn.Multi(
			&zk.CreateRequest{Path: prefix, Acl: d.acl, Flags: zk.FlagEphemeralSequential},
			&zk.SetDataRequest{Path: parent, Version: -1},
		)
		switch {
		case err == nil && len(res) == 2 && res[1].Stat != nil:
			return path.Base(res[0].String), res[1].Stat.Mzxid, nil
		case errors.Is(err, zk.ErrNoAuth):
			// The parent's ACL lets us add children but not write it:
			// create alone, and read the czxid after.
			d.plainCreate.Store(true)
		case err == nil:
			return "", 0, fmt.Errorf("multi create: unexpected reply %+v", res)
		default:
			return "", 0, err
		}
	}
	got, err := d.conn.Create(prefix, nil, zk.FlagEphemeralSequential, d.acl)
	if err != nil {
		return "", 0, err
	}
	return path.Base(got), 0, nil
}

// findOwn returns the earliest node under parent that carries guid, or "".
func (d *zkDriver) findOwn(parent, guid string) (string, error) {
	kids, _, err := d.conn.Children(parent)
	if err != nil {
		return "", err
	}
	for _, e := range queue(kids) {
		if e.guid == guid {
			return e.name, nil
		}
	}
	return "", nil
}

// ensure creates the root (persistent) and a lock's parent (a container,
// which the server deletes once its last child goes).
func (d *zkDriver) ensure(parent string) error {
	parts := strings.Split(strings.TrimPrefix(d.root, "/"), "/")
	p := ""
	for _, part := range parts {
		p += "/" + part
		if _, err := d.conn.Create(p, nil, zk.FlagPersistent, d.acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	_, err := d.conn.CreateContainer(parent, nil, zk.FlagContainer, d.acl)
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		// Servers before 3.5 have no containers.
		_, err = d.conn.Create(parent, nil, zk.FlagPersistent, d.acl)
	}
	if errors.Is(err, zk.ErrNodeExists) {
		return nil
	}
	return err
}

// abandon removes what a failed attempt left, waiting a little for it so
// that the common case is clean on return.
func (a *attempt) abandon() {
	if a.created == nil {
		return
	}
	d := a.d
	done := make(chan struct{})
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		defer close(done)
		select {
		case <-a.created:
		case <-d.done.Done():
			return
		}
		switch {
		case a.createErr == nil && a.clean:
			d.remove(a.parent, "", a.parent+"/"+a.node)
		case errors.Is(a.createErr, zk.ErrSessionExpired):
			// An ephemeral node of an expired session is gone.
		default:
			d.remove(a.parent, a.guid, "")
		}
	}()
	select {
	case <-done:
	case <-time.After(cleanupWait):
	case <-d.closing:
	}
}

// removeAsync removes a node (by path, or by guid under parent) in the
// background, once per path however often it is asked.
func (d *zkDriver) removeAsync(parent, guid, nodePath string) {
	key := nodePath
	if key == "" {
		key = parent + "/" + guid
	}
	if _, on := d.removing.LoadOrStore(key, struct{}{}); on {
		return
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		defer d.removing.Delete(key)
		d.remove(parent, guid, nodePath)
	}()
}

// remove deletes nodePath, or every node under parent carrying guid. It
// retries, with backoff, while the connection fails (each try also waits
// for go-zookeeper to find a server), until the node is gone, the server
// refuses for a reason of its own (ACL ...), or the driver's background
// work ends (see zkDriver.done).
func (d *zkDriver) remove(parent, guid, nodePath string) {
	wait := removeBackoff
	for {
		if d.done.Err() != nil {
			return
		}
		var err error
		if nodePath != "" {
			err = d.conn.Delete(nodePath, -1)
		} else {
			var kids []string
			kids, _, err = d.conn.Children(parent)
			for _, e := range queue(kids) {
				if e.guid == guid && err == nil {
					if derr := d.conn.Delete(parent+"/"+e.name, -1); derr != nil && !errors.Is(derr, zk.ErrNoNode) {
						err = derr
					}
				}
			}
		}
		switch {
		case err == nil, errors.Is(err, zk.ErrNoNode), errors.Is(err, zk.ErrClosing):
			return
		case !transient(err):
			return // an error the server decided (ACL, ...): retrying will not help
		}
		// Transient, including a session that expired: the next try runs
		// on the new session, and finds the node gone if it was the old
		// session's.
		select {
		case <-d.done.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, removeBackoffMax)
	}
}

func call3(ctx context.Context, d *zkDriver, fn func() (bool, *zk.Stat, <-chan zk.Event, error)) (bool, *zk.Stat, <-chan zk.Event, error) {
	type r struct {
		ok bool
		st *zk.Stat
		w  <-chan zk.Event
	}
	v, err := call(ctx, d, func() (r, error) {
		ok, st, w, err := fn()
		return r{ok, st, w}, err
	})
	return v.ok, v.st, v.w, err
}

// zkLock is a granted lock: our node is the lowest of its queue.
type zkLock struct {
	d     *zkDriver
	path  string
	token uint64
	sess  *session

	lost         chan struct{}
	lostOnce     sync.Once
	released     chan struct{}
	releasedOnce sync.Once
}

var _ driver.Lock = (*zkLock)(nil)

func (l *zkLock) Token() uint64 { return l.token }

func (l *zkLock) Lost() <-chan struct{} { return l.lost }

func (l *zkLock) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// watch reports loss: our node deleted, or the session ended.
func (l *zkLock) watch(w <-chan zk.Event) {
	for {
		select {
		case ev, ok := <-w:
			if !ok || ev.Type != zk.EventNodeDataChanged {
				// Deleted, or the watch was dropped with the session.
				select {
				case <-l.released:
				default:
					l.markLost()
				}
				return
			}
			exists, _, nw, err := l.d.conn.ExistsW(l.path)
			switch {
			case err != nil:
				w = nil // a connection error: Renew and the session decide
			case !exists:
				l.markLost()
				return
			default:
				w = nw
			}
		case <-l.sess.lost:
			l.markLost()
			return
		case <-l.released:
			return
		case <-l.d.closing:
			return
		}
	}
}

var errDisconnected = driver.Unavailable(errors.New("zklock: disconnected from ZooKeeper; the session (and the lock) may still be alive"))

// Renew checks that our node still exists. ZooKeeper has nothing to extend:
// the session keeps the node, and any answered request proves the session
// alive at its send time.
func (l *zkLock) Renew(ctx context.Context) (driver.Validity, error) {
	since := time.Now()
	if l.sess.ended() {
		return driver.Validity{}, fmt.Errorf("%w: %w", driver.ErrLockLost, errSessionEnded)
	}
	if l.d.conn.State() != zk.StateHasSession {
		return driver.Validity{}, errDisconnected
	}
	ok, st, err := call2(ctx, l.d, func() (bool, *zk.Stat, error) { return l.d.conn.Exists(l.path) })
	switch {
	case errors.Is(err, zk.ErrSessionExpired):
		return driver.Validity{}, fmt.Errorf("%w: %w", driver.ErrLockLost, err)
	case err != nil:
		return driver.Validity{}, l.d.wrapErr(ctx, "check "+l.path, err)
	case !ok:
		return driver.Validity{}, fmt.Errorf("%w: node %s is gone", driver.ErrLockLost, l.path)
	case st.EphemeralOwner != l.sess.id:
		return driver.Validity{}, fmt.Errorf("%w: node %s belongs to session %#x", driver.ErrLockLost, l.path, st.EphemeralOwner)
	}
	return driver.Validity{Since: since, TTL: l.d.ttl()}, nil
}

// Release deletes our node. Its path carries a random guid and a sequence
// number, and only our session created it, so the node at that path is
// ours or gone: the delete cannot touch anyone else's lock. When the
// delete's outcome is unknown (ctx ended, connection down) the node is
// removed in the background, retried until it is gone: left behind, it
// would hold the queue for as long as the session lives. Release may be
// called again after a failure: it then deletes again, or reports the lock
// lost once the node is gone.
func (l *zkLock) Release(ctx context.Context) error {
	l.releasedOnce.Do(func() { close(l.released) })
	if l.sess.ended() {
		return fmt.Errorf("%w: %w", driver.ErrLockLost, errSessionEnded)
	}
	_, err := call(ctx, l.d, func() (struct{}, error) { return struct{}{}, l.d.conn.Delete(l.path, -1) })
	switch {
	case err == nil:
		return nil
	case errors.Is(err, zk.ErrNoNode), errors.Is(err, zk.ErrSessionExpired):
		return fmt.Errorf("%w: node %s: %w", driver.ErrLockLost, l.path, err)
	}
	// Unknown outcome: make sure the node goes, or it would hold the queue
	// for as long as the session lives.
	l.d.removeAsync("", "", l.path)
	return l.d.wrapErr(ctx, "delete "+l.path, err)
}
