package etcdlock

import (
	"context"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Orphans: keys of this driver that outlived their purpose. A Release whose
// delete failed (a cancelled context, etcd out of reach) leaves the lock's
// key; an Acquire that ends without the lock (its context ended, a request
// failed without an answer) leaves its queue key when the delete it makes
// before returning fails too. Such a key sits on the driver's shared lease,
// which the driver's other locks and waiters keep alive: left alone it would
// block the name until the driver closes.
//
// So the driver deletes each orphan in the background, owner-checked (by
// create revision), retrying with backoff until the delete succeeds, the key
// is found gone or not ours, the driver closes (Close revokes the leases,
// which deletes whatever is left) or the user closes the etcd client
// (nothing renews the leases then, and the keys expire with them). The lease
// that carries an orphan is also retired: new locks and waiters get a new
// lease, so the old one is renewed only by the locks that were already on
// it. A delete can keep failing while keep-alives succeed only if etcd
// refuses this user the delete (its permissions changed); even then the
// orphan expires one TTL after the last of those locks ends.

// cleanupContext is driver.CleanupContext(ctx), also cancelled by Close,
// whose lease revocations delete whatever the cleanup would have.
func (d *Driver) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := driver.CleanupContext(ctx)
	stop := context.AfterFunc(d.closeCtx, cancel)
	return ctx, func() { stop(); cancel() }
}

// abandon removes the key of a lock an Acquire called with ctx gives up on
// (l is not returned to anyone, so l.del is free), sending the delete again
// while it fails in a way that may pass (a reset connection). If it is not
// deleted within driver.CleanupTimeout, the key becomes an orphan. It
// reports whether the key is gone.
func (d *Driver) abandon(ctx context.Context, l *lock) bool {
	d.unwatch(l) // our own delete is no loss
	l.del <- struct{}{}
	ctx, cancel := d.cleanupContext(ctx)
	var bo backoff
	_, err := l.remove(ctx)
	for err != nil && ctx.Err() == nil && transient(err) && bo.wait(ctx) == nil {
		_, err = l.remove(ctx)
	}
	cancel()
	<-l.del
	if err != nil {
		d.orphan(l)
		return false
	}
	return true
}

// orphan queues l's key for deletion in the background and retires its
// lease. It reports false, queueing nothing, when the driver or the etcd
// client is closed: nothing renews the lease any more, so the key expires
// with it (Close also revokes it).
func (d *Driver) orphan(l *lock) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.cli.Ctx().Err() != nil {
		return false
	}
	d.orphans[l] = struct{}{}
	if d.leases[l.ls.key] == l.ls {
		delete(d.leases, l.ls.key)
	}
	if d.reaping {
		select {
		case d.kick <- struct{}{}:
		default:
		}
		return true
	}
	d.reaping = true
	d.wg.Add(1)
	go d.reap()
	return true
}

// unorphan forgets l's key: Release deleted it, or found it gone.
func (d *Driver) unorphan(l *lock) {
	d.mu.Lock()
	delete(d.orphans, l)
	d.mu.Unlock()
}

// reap deletes orphans until there are none left, backing off while the
// deletes fail.
func (d *Driver) reap() {
	defer d.wg.Done()
	var bo backoff
	for {
		d.mu.Lock()
		if d.closed || len(d.orphans) == 0 {
			d.reaping = false
			d.mu.Unlock()
			return
		}
		batch := make([]*lock, 0, len(d.orphans))
		for l := range d.orphans {
			batch = append(batch, l)
		}
		d.mu.Unlock()

		left := false
		for _, l := range batch {
			if d.reapOne(l) {
				d.unorphan(l)
			} else {
				left = true
			}
		}
		if !left {
			bo.reset()
			continue
		}
		if d.cli.Ctx().Err() != nil {
			// The owner closed the etcd client: no delete can succeed,
			// and nothing renews our leases any more.
			d.mu.Lock()
			clear(d.orphans)
			d.reaping = false
			d.mu.Unlock()
			return
		}
		t := time.NewTimer(bo.step())
		select {
		case <-t.C:
		case <-d.kick: // a new orphan: try at once
		case <-d.closeCtx.Done():
		}
		t.Stop()
	}
}

// reapOne tries once, for up to driver.CleanupTimeout, to delete an orphan;
// it reports whether it is done with it (deleted, or not ours any more).
func (d *Driver) reapOne(l *lock) bool {
	select {
	case l.del <- struct{}{}:
	default:
		return false // a Release is at it; look again next round
	}
	defer func() { <-l.del }()
	ctx, cancel := d.cleanupContext(context.Background())
	defer cancel()
	_, err := l.remove(ctx)
	return err == nil
}
