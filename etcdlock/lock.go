package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// lock is one queue key: a waiter's until it reaches the head, then a held
// lock's. A key whose creation is in doubt (the request failed without an
// answer) is a lock with rev 0 that only ever gets removed.
type lock struct {
	d     *Driver
	ls    *lease
	name  string
	mode  driver.Mode // Shared for a reader
	limit int         // n for one of n permits, 0 for a lock
	key   string
	pfx   string
	rev   int64         // create revision of key: the fencing token; 0 if unknown
	gone  atomic.Bool   // the loss was reported
	mu    sync.Mutex    // guards lost and why
	lost  chan struct{} // made on demand (Lost, a wait), closed at the loss
	why   string
	// notify is NotifyLost's function, called once at the loss.
	notify atomic.Pointer[func()]
	// settled: key exists and rev is known (set under d.wmu; loss.go).
	settled bool

	// del is held by whoever is deleting key: Release, an Acquire cleaning
	// up, or the orphan reaper. It guards removed.
	del     chan struct{}
	removed bool // this driver deleted key
	// inDoubt: an owner-checked delete of key failed without an answer, so
	// it may have been applied; a later "key not ours" may be its doing.
	inDoubt bool
}

// track makes the lock for a new queue key of req, key under pfx (the
// name's range, kept as a part of key: a held lock costs one string).
func (d *Driver) track(ls *lease, req driver.Request, pfx, key string, rev int64) *lock {
	return &lock{d: d, ls: ls, name: req.Name, mode: req.Mode, limit: req.Limit, key: key, pfx: key[:len(pfx)], rev: rev,
		del: make(chan struct{}, 1)}
}

// ours is the condition that l's key is still the one l created: the same
// create revision, and still on l's lease (a key someone else put again,
// without a lease or on another, keeps its create revision but is no longer
// l's to renew, change or delete).
func (l *lock) ours() []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev),
		clientv3.Compare(clientv3.LeaseValue(l.key), "=", l.ls.id),
	}
}

// markLost reports l's loss, once: its Lost channel closes and its
// NotifyLost function is called.
func (l *lock) markLost(why string) {
	l.mu.Lock()
	if l.gone.Load() {
		l.mu.Unlock()
		return
	}
	l.why = why
	l.gone.Store(true)
	if l.lost != nil {
		close(l.lost)
	}
	l.mu.Unlock()
	if p := l.notify.Swap(nil); p != nil {
		(*p)()
	}
}

func (l *lock) lostErr() error {
	l.mu.Lock()
	why := l.why
	l.mu.Unlock()
	return fmt.Errorf("%w: queue key %q: %s", driver.ErrLockLost, l.key, why)
}

func (l *lock) Token() uint64 { return uint64(l.rev) }

// Lost returns a channel closed at l's loss. The portable layer calls
// NotifyLost instead; a waiter selects on it.
func (l *lock) Lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = make(chan struct{})
		if l.gone.Load() {
			close(l.lost)
		}
	}
	return l.lost
}

// Renew is RenewAsync waiting for its outcome, or for ctx's end.
func (l *lock) Renew(ctx context.Context) (driver.Validity, error) {
	v, err := driver.WaitRenewal(ctx, l)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return v, fmt.Errorf("etcdlock: renew %q: %w", l.key, err)
	}
	return v, err
}

// RenewAsync (driver.AsyncRenewer) refreshes the shared lease (one
// KeepAliveOnce for all renewals in flight) and then checks that the key is
// still ours, in a transaction shared with the other owner checks in flight
// (batch.go), and calls done with the outcome: no goroutine waits for
// either, done is called by the goroutine that got the answer. Both run on
// the driver's contexts, so done comes within a TTL and releaseTimeout
// (at once when the driver closes) whatever becomes of ctx; once ctx has
// ended the renewal stops at the next stage and reports ctx's error.
//
// What a successful renewal proves: the lease was alive when the
// keep-alive was sent, so the server keeps every key on it at least a TTL
// from then (the validity returned), and at a linearizable read made after
// that, confirmed by a quorum, the key still had l's create revision and
// was still on l's lease, so no one else held the lock. The check matters
// beyond the loss watch: a cut-off leader goes on granting keep-alives until
// it steps down (the read is what a quorum confirms), and the watch does not
// report a key put again by someone else (it filters puts). A Txn of
// compares alone would count as serializable (etcd's isTxnSerializable:
// every op a serializable range, vacuously) and be answered from a member's
// own state; nested transactions are not ranges, so it is not.
func (l *lock) RenewAsync(ctx context.Context, done func(driver.Validity, error)) {
	if l.gone.Load() {
		done(driver.Validity{}, l.lostErr())
		return
	}
	if l.d.cli.Ctx().Err() != nil {
		l.markLost("its etcd client was closed: it can no longer be renewed or released")
		done(driver.Validity{}, l.lostErr())
		return
	}
	l.ls.keepAliveAsync(func(v driver.Validity, err error) {
		switch {
		case err != nil:
			done(driver.Validity{}, l.d.engineErr(ctx, err))
			return
		case ctx.Err() != nil: // nobody waits for the owner check
			done(driver.Validity{}, fmt.Errorf("etcdlock: renew %q: %w", l.key, ctx.Err()))
			return
		}
		l.d.checks.check(l, func(ok bool, err error) {
			switch {
			case err != nil:
				done(driver.Validity{}, fmt.Errorf("etcdlock: renew %q: %w", l.key, l.d.engineErr(ctx, err)))
			case ctx.Err() != nil:
				// As a Renew cut short: the holder may have released the
				// key since (its delete is no loss).
				done(driver.Validity{}, fmt.Errorf("etcdlock: renew %q: %w", l.key, ctx.Err()))
			case !ok:
				l.d.unwatch(l)
				l.markLost("its key was deleted")
				done(driver.Validity{}, l.lostErr())
			default:
				done(v, nil)
			}
		})
	})
}

// releaseTimeout bounds a Release whatever context it is given. A key that
// could not be deleted in time is deleted in the background (orphans.go).
const releaseTimeout = 5 * time.Second

// Release deletes the key if it is still the one this lock created. It may
// be called again after a failure: once the key is deleted, by this call,
// an earlier one or the driver's background retry, it returns nil; if the
// key was found gone or someone else's, an error matching ErrLockLost.
//
// A delete that fails in a way that may pass (a connection reset under it,
// no leader) is sent again, with backoff, until it is answered or ctx (at
// most releaseTimeout) ends: a blip costs the reconnect, not a release in
// the background. Such a failure leaves the delete in doubt — it may have
// been applied, its answer lost — so a later answer "not ours" is sorted
// out by settleInDoubt.
func (l *lock) Release(ctx context.Context) error {
	l.d.unwatch(l) // our own delete is no loss
	goneBefore := l.gone.Load()
	rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	if err := l.takeDel(rctx); err != nil { // the background delete has it
		return fmt.Errorf("etcdlock: release %q: %w", l.key, l.d.engineErr(ctx, err))
	}
	defer func() { <-l.del }()
	var bo backoff
	deleted, err := l.remove(rctx)
	for err != nil && rctx.Err() == nil && transient(err) && bo.wait(rctx) == nil {
		deleted, err = l.remove(rctx)
	}
	if err == nil && !deleted && l.inDoubt && !goneBefore {
		deleted, err = l.settleInDoubt(rctx)
	}
	if errors.Is(err, driver.ErrLockLost) {
		l.d.unorphan(l)
		return fmt.Errorf("etcdlock: release %q: %w", l.key, err)
	}
	if err != nil {
		l.d.orphan(l)
		return fmt.Errorf("etcdlock: release %q: %w", l.key, l.d.engineErr(ctx, err))
	}
	l.d.unorphan(l)
	if !deleted {
		return fmt.Errorf("%w: queue key %q was already gone", driver.ErrLockLost, l.key)
	}
	return nil
}

// errOutcomeUnknown: a release whose delete may have been applied found the
// key gone, and its lease gone too, so nothing tells whether the delete or
// the lease's expiry removed it. The lock is not held either way.
var errOutcomeUnknown = fmt.Errorf("%w: the release's outcome is unknown: its owner-checked delete failed without an answer, "+
	"and by the time it was sent again the key and its lease were gone (the delete or the lease's expiry removed it)", driver.ErrLockLost)

// settleInDoubt decides, for a key found not ours after an owner-checked
// delete of it failed without an answer, whether that delete removed it.
// The caller holds l.del.
//
// Who can remove l's key: (1) the lease's expiry or revocation, which
// removes every key on the lease; (2) an owner-checked delete of it, which
// only this lock makes (it compares the create revision and lease, and
// both are l's alone) — by Release or the orphan reaper, one at a time
// under l.del, and this driver's Close, which revokes the lease (1); (3) a
// delete by name from outside dlock (an operator's etcdctl del), which the
// holder's loss watch reports as a loss. Nothing in dlock puts the key
// again: it is named by our lease id and a sequence number.
//
// So if the lease is alive at a time after the retry found the key gone —
// TimeToLive, sent after that answer, finds it — the key was not removed
// by (1), and was removed by our delete in doubt (2), unless an operator
// deleted it by hand in the moment between that delete and its retry (3),
// which no answer from etcd can tell apart: the delete's reply is what was
// lost. We count it as our release: the lock was ours until at least the
// moment the release was sent, and free after. If the lease is gone, (1)
// and (2) cannot be told apart: the result says the outcome is unknown
// (matching ErrLockLost, which means "no longer held, or may not be": it is
// not held either way) rather than a false release or a false loss.
func (l *lock) settleInDoubt(ctx context.Context) (bool, error) {
	if l.d.cli.Ctx().Err() != nil {
		return false, errClientClosed
	}
	resp, err := l.d.cli.TimeToLive(ctx, l.ls.id)
	switch {
	case err != nil:
		return false, fmt.Errorf("checking lease %x after a delete in doubt: %w", int64(l.ls.id), err)
	case resp.TTL <= 0:
		return false, errOutcomeUnknown
	}
	l.removed = true
	return true, nil
}

// takeDel takes l.del, waiting out a background delete in flight, unless
// ctx ends first. A free l.del is taken even when ctx has ended, so that
// the key is handed to the background delete.
func (l *lock) takeDel(ctx context.Context) error {
	select {
	case l.del <- struct{}{}:
		return nil
	default:
	}
	select {
	case l.del <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// remove deletes l's key if it is still the one l created, or, if its
// revision is unknown, by name (the name carries our lease id and sequence
// number: no one else ever writes it). It reports whether the key is
// deleted by this driver (now or before); false with a nil error means it
// was not ours any more (or, if l.inDoubt, that an earlier delete of ours
// may have removed it). The caller holds l.del.
func (l *lock) remove(ctx context.Context) (bool, error) {
	if l.removed {
		return true, nil
	}
	if l.d.cli.Ctx().Err() != nil {
		// clientv3 would retry on a closed client until ctx ends.
		return false, errClientClosed
	}
	if l.rev == 0 {
		if _, err := l.d.cli.Delete(ctx, l.key); err != nil {
			return false, err
		}
		l.removed = true
		return true, nil
	}
	ok, err := l.d.deletes.owned(ctx, l)
	if err != nil {
		if transient(err) || isContextErr(err) {
			l.inDoubt = true // it may have been applied, its answer lost
		}
		return false, err
	}
	l.removed = ok
	return ok, nil
}
