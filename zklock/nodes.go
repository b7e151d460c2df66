package zklock

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// A queue node's life on the server: the attempt's goroutine that creates
// and watches it (runOwn), the protected create, and its removal, retried
// in the background until done.

// The background removal of a node whose delete failed retries with this
// backoff until the node is gone. It never gives up while the driver lives:
// a node left behind lives as long as its session, and a session that
// rides out an outage (or one of no quorum, which freezes expiry) would
// keep it, and block its queue, for as long as the driver runs.
const (
	removeBackoff    = 50 * time.Millisecond
	removeBackoffMax = time.Second
)

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
	var parentMade chan bool
	if a.fresh {
		// A parent this driver has not seen, where the latest such were
		// missing: make it right before the create, rather than learn it
		// from a failed multi (parents.go). The two go out back to back;
		// should the create overtake the parent's (two goroutines' sends
		// are not ordered), it fails with NoNode and is sent again after
		// it (createNode). Any error of the parent's is the create's to
		// meet.
		parentMade = make(chan bool, 1)
		sent := make(chan struct{})
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			close(sent)
			made, _ := d.ensure(a.parent)
			parentMade <- made
		}()
		<-sent
	}
	a.sendAt = time.Now()
	close(a.sending)
	a.node, a.czxid, a.alone, a.clean, a.createErr = d.createNode(a.parent, a.guid, a.value, a.known, a.fresh)
	if a.fresh {
		d.parents.wasMissing(<-parentMade)
	}
	if a.createErr == nil {
		a.path = a.parent + "/" + a.node
	}
	close(a.created)
	if a.createErr != nil {
		a.ownErr = a.createErr
		close(a.statDone)
		return
	}
	if d.nodeEvents {
		d.watchNode(a.nodePath())
	}
	ok, st, w, err := d.conn.ExistsW(a.nodePath())
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
		if d.nodeEvents {
			d.unwatchNode(a.nodePath())
		}
		return
	}
	l.sess.add(l)
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
	if a.haveStat {
		w = a.watch
	}
	switch {
	case d.nodeEvents && w != nil:
		// The driver sees the watch's events (loss.go): no goroutine.
		d.holdNode(a.nodePath(), l)
	case d.nodeEvents:
		d.unwatchNode(a.nodePath())
	default:
		l.watch(w)
	}
}

// createNode creates a protected ephemeral-sequential node and returns its
// name and czxid (0 if unknown), with data as its data (an election's
// value). alone is true when the create's reply shows our node the only
// child of parent (see createOnce). clean is false when a reply was lost
// on the way. known says the driver had seen parent when the attempt
// looked it up (parents.go); fresh, that the caller makes parent alongside
// (ensure) and counts the outcome for the guess of parents.go itself.
//
// The create goes in a multi with an unconditional empty write to the
// parent's data: go-zookeeper has no create2, and the parent's stat in the
// multi's reply carries mzxid = the transaction's zxid = our node's czxid,
// the token, with no read after the create.
func (d *Driver) createNode(parent, guid string, data []byte, known, fresh bool) (name string, czxid int64, alone, clean bool, err error) {
	prefix := parent + "/" + nodePrefix(guid)
	clean = true
	for range 5 {
		name, czxid, alone, err = d.createOnce(parent, prefix, data)
		switch {
		case err == nil:
			if !known && !fresh {
				d.parents.wasMissing(false)
			}
			d.parents.saw(parent, parentFacts{company: !alone})
			return name, czxid, alone, clean, nil
		case errors.Is(err, zk.ErrNoNode):
			d.parents.forget(parent)
			if !known && !fresh {
				d.parents.wasMissing(true)
				known = true // counted once
			}
			if _, err = d.ensure(parent); err != nil {
				if !errors.Is(err, zk.ErrConnectionClosed) {
					return "", 0, false, clean, fmt.Errorf("create %s: %w", parent, err)
				}
				// Sent again, as the create is, on the next round
				// (the multi fails with NoNode again while the
				// parent is missing).
				err = fmt.Errorf("create %s: %w", parent, err)
			}
		case errors.Is(err, zk.ErrConnectionClosed):
			// The request may have been applied with its reply lost: look
			// for our guid before creating again (samuel/go-zookeeper#229).
			clean = false
			if found, ferr := d.findOwn(parent, guid); ferr == nil && found != "" {
				hook(testHooks.recovered)
				return found, 0, false, clean, nil
			}
		default:
			return "", 0, false, clean, err
		}
		select {
		case <-d.closing:
			return "", 0, false, clean, driver.ErrClosed
		default:
		}
	}
	return "", 0, false, clean, err
}

// createOnce sends the create once. alone reports that the parent's stat
// in the multi's reply, the parent as our transaction left it, counts one
// child: ours. Then no node was ahead of ours at the create's zxid, a
// transaction a quorum committed, and none can join ahead later (a later
// create gets a higher sequence): our node heads its queue.
func (d *Driver) createOnce(parent, prefix string, data []byte) (string, int64, bool, error) {
	if !d.plainCreate.Load() {
		res, err := d.conn.Multi(
			&zk.CreateRequest{Path: prefix, Data: data, Acl: d.acl, Flags: zk.FlagEphemeralSequential},
			&zk.SetDataRequest{Path: parent, Version: -1},
		)
		switch {
		case err == nil && len(res) == 2 && res[1].Stat != nil:
			return path.Base(res[0].String), res[1].Stat.Mzxid, res[1].Stat.NumChildren == 1, nil
		case errors.Is(err, zk.ErrNoAuth):
			// The parent's ACL lets us add children but not write it:
			// create alone, and read the czxid after.
			d.plainCreate.Store(true)
		case err == nil:
			return "", 0, false, fmt.Errorf("multi create: unexpected reply %+v", res)
		default:
			return "", 0, false, err
		}
	}
	got, err := d.conn.Create(prefix, data, zk.FlagEphemeralSequential, d.acl)
	if err != nil {
		return "", 0, false, err
	}
	return path.Base(got), 0, false, nil
}

// findOwn returns the earliest node under parent that carries guid, or "".
func (d *Driver) findOwn(parent, guid string) (string, error) {
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

// ensure creates a lock's parent (a container, which the server deletes
// once its last child goes) and, the first time or when the parent's
// create finds it missing, the root (persistent). made reports that this
// call created the parent.
func (d *Driver) ensure(parent string) (made bool, err error) {
	if !d.rootMade.Load() {
		if err := d.ensureRoot(); err != nil {
			return false, err
		}
	}
	made, err = d.createParent(parent)
	if errors.Is(err, zk.ErrNoNode) {
		// The root was removed since: make it again.
		d.rootMade.Store(false)
		if err := d.ensureRoot(); err != nil {
			return false, err
		}
		made, err = d.createParent(parent)
	}
	return made, err
}

func (d *Driver) ensureRoot() error {
	parts := strings.Split(strings.TrimPrefix(d.root, "/"), "/")
	p := ""
	for _, part := range parts {
		p += "/" + part
		if _, err := d.conn.Create(p, nil, zk.FlagPersistent, d.acl); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	d.rootMade.Store(true)
	return nil
}

// createParent creates parent, a container, and reports whether this call
// made it. Only a server that does not know the container create (before
// 3.5: it answers UNIMPLEMENTED, then closes the connection) gets a
// persistent parent instead, which nothing removes; any other error is
// returned as it is. A connection error in particular may hide a container
// create that reached the server, and a persistent create behind it would
// leave a node per name forever where the container was about to be made.
func (d *Driver) createParent(parent string) (bool, error) {
	var err error
	if !d.noContainer.Load() {
		_, err = d.conn.CreateContainer(parent, nil, zk.FlagContainer, d.acl)
		if unimplemented(err) {
			d.noContainer.Store(true)
		}
	}
	if d.noContainer.Load() {
		_, err = d.conn.Create(parent, nil, zk.FlagPersistent, d.acl)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, zk.ErrNodeExists):
		return false, nil
	}
	return false, err
}

// errUnimplemented is ZooKeeper's UNIMPLEMENTED (-6), the answer to a
// request whose opcode the server does not know (its
// UnimplementedRequestProcessor, which then closes the connection).
// go-zookeeper has no sentinel for it: it returns
// fmt.Errorf("unknown error: %v", code).
var errUnimplemented = fmt.Errorf("unknown error: %v", zk.ErrCode(-6))

func unimplemented(err error) bool {
	return err != nil && err.Error() == errUnimplemented.Error()
}

// abandon removes what a failed attempt left. Acquire waits for the removal
// as for one cleanup request (driver.CleanupContext of its ctx), so that
// the common case is clean on return; past that the removal goes on in the
// background, retried until the node is gone (see remove).
func (a *attempt) abandon(ctx context.Context) {
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
	cctx, cancel := driver.CleanupContext(ctx)
	defer cancel()
	select {
	case <-done:
	case <-cctx.Done():
	case <-d.closing:
	}
}

// removeAsync removes a node (by path, or by guid under parent) in the
// background, once per path however often it is asked.
func (d *Driver) removeAsync(parent, guid, nodePath string) {
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
// work ends (see Driver.done).
func (d *Driver) remove(parent, guid, nodePath string) {
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
