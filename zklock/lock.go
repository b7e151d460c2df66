package zklock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// zkLock is a granted lock: our node is the lowest of its queue.
type zkLock struct {
	d     *Driver
	path  string
	token uint64
	sess  *session

	released atomic.Bool // Release was called
	// inDoubt: a delete of the node failed without an answer, so it may
	// have been applied; a later "no node" may be its doing.
	inDoubt atomic.Bool

	// Loss (loss.go). The channels are made only when asked for: a held
	// lock reports loss by a call, and costs a few words.
	mu        sync.Mutex
	lostFired bool          // markLost has run
	notify    func()        // NotifyLost's
	lost      chan struct{} // Lost's, made by it
	stop      chan struct{} // closed by Release: ends watch, if it runs

	// floor is the TTL of the grant: the portable layer sets its renew
	// interval from it, so no renewal may report less (provenTTL).
	floor time.Duration
}

// The portable layer holds a granted lock as a driver.Lock, and renews it
// without a goroutine waiting for the engine.
var (
	_ driver.Lock         = (*zkLock)(nil)
	_ driver.AsyncRenewer = (*zkLock)(nil)
)

// errStaleActivity is a renewal's answer when the leader's last news of
// the session is too old to support the lease's TTL (the heartbeat has
// missed a beat): it may pass at the next try.
var errStaleActivity = driver.Unavailable(errors.New("zklock: renewal: the leader's last news of the session is too old to renew the lease's TTL yet"))

// Token is our node's czxid.
func (l *zkLock) Token() uint64 { return l.token }

// Lost is closed when our node is deleted or its session ends (watch).
func (l *zkLock) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = make(chan struct{})
		if l.lostFired {
			close(l.lost)
		}
	}
	return l.lost
}

// watch reports loss: our node deleted, or the session ended. It runs
// only when the driver does not see the watch events (New without an event
// channel): a goroutine per held lock.
func (l *zkLock) watch(w <-chan zk.Event) {
	l.mu.Lock()
	if l.released.Load() {
		l.mu.Unlock()
		return
	}
	l.stop = make(chan struct{})
	stop := l.stop
	l.mu.Unlock()
	for {
		select {
		case ev, ok := <-w:
			if !ok || ev.Type != zk.EventNodeDataChanged {
				// Deleted, or the watch was dropped with the session.
				if !l.isReleased() {
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
		case <-stop:
			return
		case <-l.d.closing:
			return
		}
	}
}

var errDisconnected = driver.Unavailable(errors.New("zklock: disconnected from ZooKeeper; the session (and the lock) may still be alive"))

// Renew proves that our node and session are still alive at the leader,
// with a check of the node in a transaction (see quorum.go) shared with
// the session's other renewals in flight (batch.go): ZooKeeper has nothing
// to extend, the session keeps the node, and the leader expires the
// session no earlier than the session timeout after it last heard of it.
// It is RenewAsync waiting for its answer, or for ctx to end.
func (l *zkLock) Renew(ctx context.Context) (driver.Validity, error) {
	return driver.WaitRenewal(ctx, l)
}

// RenewAsync starts Renew's check and returns: the renewal joins the
// session's next round (batch.go), whose sender calls done with the
// outcome. No goroutine waits for it.
func (l *zkLock) RenewAsync(ctx context.Context, done func(driver.Validity, error)) {
	switch {
	case l.sess.ended():
		done(driver.Validity{}, fmt.Errorf("%w: %w", driver.ErrLockLost, errSessionEnded))
		return
	case l.d.conn.State() != zk.StateHasSession:
		done(driver.Validity{}, errDisconnected)
		return
	case ctx.Err() != nil:
		done(driver.Validity{}, ctx.Err())
		return
	}
	l.d.batchAsync(&l.d.renew, l.path, func(r *round, err error) { done(l.renewed(ctx, r, err)) })
}

// renewed is a renewal's outcome from its round's.
func (l *zkLock) renewed(ctx context.Context, r *round, err error) (driver.Validity, error) {
	switch {
	case errors.Is(err, zk.ErrSessionExpired):
		return driver.Validity{}, fmt.Errorf("%w: %w", driver.ErrLockLost, err)
	case errors.Is(err, zk.ErrNoNode):
		// The path carries our guid and sequence number: no other session
		// can have a node there, so a node that is there is ours.
		return driver.Validity{}, fmt.Errorf("%w: node %s is gone", driver.ErrLockLost, l.path)
	case err != nil:
		return driver.Validity{}, l.d.wrapErr(ctx, "check "+l.path, err)
	}
	ttl := r.ttl(l.d, l.sess.id)
	if ttl < l.floor {
		return driver.Validity{}, errStaleActivity
	}
	return driver.Validity{Since: r.sent, TTL: ttl}, nil
}

// Release deletes our node, in a multi with the session's other releases
// in flight (batch.go). Its path carries a random guid and a sequence
// number, and only our session created it, so the node at that path is
// ours or gone: the delete cannot touch anyone else's lock. A delete that
// fails because the connection dropped (a blip: the session lives on) is
// sent again, with backoff, within ctx; a "no node" after such a failure is
// sorted out by settleInDoubt. When the delete's outcome is still unknown
// (ctx ended, connection down) the node is
// removed in the background, retried until it is gone: left behind, it
// would hold the queue for as long as the session lives. Release may be
// called again after a failure: it then deletes again or, once the node is
// gone, returns nil if the session that made it is shown alive (the node
// went by our own delete: an earlier one or the one in the background) and
// an error matching ErrLockLost if not.
func (l *zkLock) Release(ctx context.Context) error {
	if l.released.CompareAndSwap(false, true) {
		l.sess.drop(l)
		l.d.unwatchNode(l.path)
		l.mu.Lock()
		if l.stop != nil {
			close(l.stop)
		}
		l.mu.Unlock()
	}
	if l.sess.ended() {
		return fmt.Errorf("%w: %w", driver.ErrLockLost, errSessionEnded)
	}
	_, err := l.d.batch(ctx, &l.d.release, l.path)
	wait := removeBackoff
	for err != nil && l.mayPass(err) && ctx.Err() == nil {
		// The connection dropped under the delete (a blip): go-zookeeper
		// reconnects on the same session; send it again, within ctx.
		l.inDoubt.Store(true)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			wait = min(2*wait, removeBackoffMax)
			_, err = l.d.batch(ctx, &l.d.release, l.path)
		}
	}
	if errors.Is(err, zk.ErrNoNode) && l.inDoubt.Load() {
		err = l.settleInDoubt(ctx)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, zk.ErrNoNode), errors.Is(err, zk.ErrSessionExpired), errors.Is(err, driver.ErrLockLost):
		return fmt.Errorf("%w: node %s: %w", driver.ErrLockLost, l.path, err)
	}
	// Unknown outcome: make sure the node goes, or it would hold the queue
	// for as long as the session lives. The node's going is then our own
	// release (this delete, or the one in the background), which a later
	// Release that finds it gone reports as such (settleInDoubt).
	l.inDoubt.Store(true)
	l.d.removeAsync("", "", l.path)
	return l.d.wrapErr(ctx, "delete "+l.path, err)
}

// mayPass says whether a delete that failed with err may succeed if sent
// again on the same session: the connection dropped, not the session.
func (l *zkLock) mayPass(err error) bool {
	return connDropped(err) && !l.sess.ended() && l.d.done.Err() == nil
}

// errOutcomeUnknown: a release whose delete may have been applied found the
// node gone, and could not show its session alive, so nothing tells
// whether the delete or the session's end removed it.
var errOutcomeUnknown = errors.New("the release's outcome is unknown: its delete failed without an answer, " +
	"and by the time it was sent again the node was gone and its session could not be shown alive")

// settleInDoubt decides, for our node found gone after a delete of it
// failed without an answer (it may have been applied, its reply lost),
// whether that delete removed it.
//
// Who can remove our node: (1) the end of the session that created it (it
// is ephemeral); (2) a delete of its path, which in dlock only this lock
// makes (the path carries a random guid and our sequence number: Release,
// and the background remove it falls back on); (3) a delete by hand from
// outside dlock, which the loss watch reports as a loss. So if the session
// is alive at a time after the delete was found gone — a request on it,
// sent after that answer, succeeds on the same session id — the node was
// not removed by (1), and was removed by our delete in doubt (2), unless
// someone deleted it by hand in the moment between that delete and its
// retry (3), which no answer from ZooKeeper can tell apart: the delete's
// reply is what was lost. We count it as our release: the lock was ours
// until at least the moment the release was sent, and free after. If the
// session cannot be shown alive, (1) and (2) cannot be told apart: the
// result says the outcome is unknown (matching ErrLockLost, "no longer
// held, or may not be": it is not held either way).
func (l *zkLock) settleInDoubt(ctx context.Context) error {
	if l.sess.ended() || l.d.conn.SessionID() != l.sess.id {
		return fmt.Errorf("%w: %w", driver.ErrLockLost, errOutcomeUnknown)
	}
	if _, err := l.d.exists(ctx, l.d.root, false); err != nil || l.sess.ended() || l.d.conn.SessionID() != l.sess.id {
		return fmt.Errorf("%w: %w", driver.ErrLockLost, errOutcomeUnknown)
	}
	return nil
}
