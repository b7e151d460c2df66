package etcdlock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
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
	rev   int64 // create revision of key: the fencing token; 0 if unknown
	lost  chan struct{}
	stop  context.CancelFunc // stops the watch on key
	once  sync.Once
	gone  atomic.Bool // lost was closed
	why   atomic.Value

	// del is held by whoever is deleting key: Release, an Acquire cleaning
	// up, or the orphan reaper. It guards removed.
	del     chan struct{}
	removed bool // this driver deleted key
}

// track makes the lock for a new queue key of req.
func (d *Driver) track(ls *lease, req driver.Request, key string, rev int64) *lock {
	return &lock{d: d, ls: ls, name: req.Name, mode: req.Mode, limit: req.Limit, key: key, pfx: d.namePrefix(req.Name), rev: rev,
		lost: make(chan struct{}), stop: func() {}, del: make(chan struct{}, 1)}
}

// held starts watching a granted lock's key for deletion. A waiter does
// without: it re-reads its key at every wake-up and keeps its lease alive,
// which reports the lease's expiry, and its watch would cost a request and
// a read per contended Lock.
func (l *lock) held() *lock {
	d := l.d
	ctx, cancel := context.WithCancel(d.closeCtx)
	l.stop = cancel
	d.mu.Lock()
	if !d.closed { // else closeCtx is done and there is nothing to watch for
		if !d.warm {
			d.warm = true
			// clientv3 closes a watch stream when its last watch ends and
			// opens a new one for the next: with a watch per lock that
			// would cost a stream set-up per Lock. One idle watch on a key
			// never written keeps the stream open for the driver's life.
			d.cli.Watch(d.closeCtx, d.root)
		}
		d.wg.Add(1)
		go l.watchOwn(ctx)
	}
	d.mu.Unlock()
	return l
}

// ownWatchDelay is how long a lock is held before its key gets a watch of
// its own. Many locks are released sooner; creating and cancelling a watch per
// lock costs ~0.5 ms of server and client CPU, 20% of an uncontended cycle.
// A deletion in the meantime is reported when the watch starts.
const ownWatchDelay = 10 * time.Millisecond

// watchOwn closes l.lost when l's key is deleted, by anyone or by the lease
// expiring, or when the etcd client is closed under the lock (nothing can
// renew or release it then). A watch that ends for another reason (the
// server cancelled it, a read failed) is started again after a backoff: a
// closed client's Watch returns a closed channel at once, and a loop
// without one would spin on it.
func (l *lock) watchOwn(ctx context.Context) {
	defer l.d.wg.Done()
	if sleep(ctx, ownWatchDelay) != nil {
		return
	}
	var bo backoff
	for {
		started := time.Now()
		if l.watchOwnOnce(ctx) {
			return
		}
		if l.d.cli.Ctx().Err() != nil {
			l.markLost("its etcd client was closed: it can no longer be renewed or released")
			return
		}
		if time.Since(started) > backoffMax {
			bo.reset() // that watch served a while: not a loop that ends at once
		}
		if bo.wait(ctx) != nil {
			return
		}
	}
}

// watchOwnOnce watches l's key from the current revision (a synced watcher,
// so the deletion arrives at once), then reads the key once the watch
// exists, so that a deletion before the watch is not missed. It returns
// true when it is done for good (loss reported, or ctx ended) and false
// when the watch ended and should be started again.
func (l *lock) watchOwnOnce(ctx context.Context) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range l.d.cli.Watch(wctx, l.key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut()) {
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE {
				l.markLost("its key was deleted")
				return true
			}
		}
		if wr.Err() != nil {
			return false // compacted or cancelled by the server: watch again
		}
		if wr.Created {
			// Not WithKeysOnly: etcd 3.7 leaves the lease out of it.
			resp, err := l.d.cli.Get(wctx, l.key)
			if err != nil {
				return ctx.Err() != nil
			}
			if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.rev || resp.Kvs[0].Lease != int64(l.ls.id) {
				l.markLost("its key was deleted")
				return true
			}
		}
	}
	return ctx.Err() != nil
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

func (l *lock) markLost(why string) {
	l.once.Do(func() {
		l.why.Store(why)
		l.gone.Store(true)
		close(l.lost)
	})
}

func (l *lock) lostErr() error {
	why, _ := l.why.Load().(string)
	return fmt.Errorf("%w: queue key %q: %s", driver.ErrLockLost, l.key, why)
}

func (l *lock) Token() uint64         { return uint64(l.rev) }
func (l *lock) Lost() <-chan struct{} { return l.lost }

// Renew refreshes the shared lease (one KeepAliveOnce for all renewals in
// flight) and checks that the key is still ours.
func (l *lock) Renew(ctx context.Context) (driver.Validity, error) {
	if l.gone.Load() {
		return driver.Validity{}, l.lostErr()
	}
	if l.d.cli.Ctx().Err() != nil {
		l.markLost("its etcd client was closed: it can no longer be renewed or released")
		return driver.Validity{}, l.lostErr()
	}
	v, err := l.ls.keepAlive(ctx)
	if err != nil {
		return driver.Validity{}, l.d.engineErr(ctx, err)
	}
	// A Txn of compares alone counts as serializable (etcd's
	// isTxnSerializable: every op a serializable range, vacuously), and the
	// member answers it from its own state; a cut-off leader goes on
	// granting keep-alives until it steps down. The range op makes the
	// check a linearizable read, which the leader confirms with a quorum.
	resp, err := l.d.cli.Txn(ctx).If(l.ours()...).Then(clientv3.OpGet(l.key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return driver.Validity{}, fmt.Errorf("etcdlock: renew %q: %w", l.key, l.d.engineErr(ctx, err))
	}
	if !resp.Succeeded {
		l.markLost("its key was deleted")
		return driver.Validity{}, l.lostErr()
	}
	return v, nil
}

// releaseTimeout bounds a Release whatever context it is given. A key that
// could not be deleted in time is deleted in the background (orphans.go).
const releaseTimeout = 5 * time.Second

// Release deletes the key if it is still the one this lock created. It may
// be called again after a failure: once the key is deleted, by this call,
// an earlier one or the driver's background retry, it returns nil; if the
// key was found gone or someone else's, an error matching ErrLockLost.
func (l *lock) Release(ctx context.Context) error {
	l.stop() // the watch is of no more use: the portable layer ends the lease
	rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	if err := l.takeDel(rctx); err != nil { // the background delete has it
		return fmt.Errorf("etcdlock: release %q: %w", l.key, l.d.engineErr(ctx, err))
	}
	defer func() { <-l.del }()
	deleted, err := l.remove(rctx)
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
// was not ours any more. The caller holds l.del.
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
	resp, err := l.d.cli.Txn(ctx).If(l.ours()...).Then(clientv3.OpDelete(l.key)).Commit()
	if err != nil {
		return false, err
	}
	l.removed = resp.Succeeded
	return resp.Succeeded, nil
}
