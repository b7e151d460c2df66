package etcdlock

import (
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// Loss watching: one watch per driver, over its whole prefix, for deletes
// only (puts are filtered by the server), from "now" (a synced watcher: a
// delete arrives as it is applied; NOTES.md). Every key of the driver's
// waiters and holders is registered in d.keys from just before the
// transaction that creates it until it is released or found lost, so a
// delete event of a registered key is that lock's loss, whoever deleted it
// (an operator, the lease expiring, Close's revocation); events of other
// clients' keys are dropped. A lock costs a map entry, not a goroutine:
// clientv3 serves each watch with a goroutine of its own, and the root one
// more per lock without driver.LossNotifier.
//
// The watch reports every delete after the revision it was created at
// (d.from). A key created at or before it (the driver's first locks, made
// while the watch is being set up, or locks taken while it is made anew)
// may have been deleted unseen, so such keys are owner-checked once the
// watch exists (batch.go), and so is every registered key when the watch is
// made anew after ending (compacted past its revision, cancelled by the
// server); clientv3 resumes a watch across reconnections by itself, from
// the revision after the last it delivered. When the etcd client is closed
// under the driver, every registered lock is reported lost at once.

// watchKey registers l's key, whose creating transaction is about to be
// sent, starting the driver's loss watch if it is not running.
func (d *Driver) watchKey(l *lock) {
	d.wmu.Lock()
	d.keys[l.key] = l
	d.wmu.Unlock()
	d.mu.Lock()
	if !d.closed && !d.watching {
		d.watching = true
		d.wg.Add(1)
		go d.watchLoss()
	}
	d.mu.Unlock()
}

// unwatch forgets l's key: it is being deleted by this driver, or its loss
// was reported.
func (d *Driver) unwatch(l *lock) {
	d.wmu.Lock()
	if d.keys[l.key] == l {
		delete(d.keys, l.key)
	}
	d.wmu.Unlock()
}

// covered is called once l's key exists and l.rev is known: if the watch
// did not exist before l's key did, l's key is checked once it does.
func (d *Driver) covered(l *lock) {
	d.wmu.Lock()
	l.settled = true
	if d.from > 0 && d.from < l.rev {
		d.wmu.Unlock()
		return
	}
	d.unchecked = append(d.unchecked, l)
	d.wmu.Unlock()
	select {
	case d.wkick <- struct{}{}:
	default:
	}
}

// lostKey reports the loss of a registered key's lock; the caller holds
// d.wmu.
func (d *Driver) lostKey(key, why string) {
	if l := d.keys[key]; l != nil {
		delete(d.keys, key)
		l.markLost(why)
	}
}

// watchLoss runs the driver's loss watch until the driver closes, making
// it anew after a backoff when it ends.
func (d *Driver) watchLoss() {
	defer d.wg.Done()
	var bo backoff
	for {
		started := time.Now()
		d.watchLossOnce()
		d.wmu.Lock()
		d.from = 0
		d.wmu.Unlock()
		if d.closeCtx.Err() != nil {
			return
		}
		if d.cli.Ctx().Err() != nil {
			d.wmu.Lock()
			for k := range d.keys {
				d.lostKey(k, "its etcd client was closed: it can no longer be renewed or released")
			}
			d.wmu.Unlock()
			return
		}
		if time.Since(started) > backoffMax {
			bo.reset() // that watch served a while: not a loop that ends at once
		}
		if bo.wait(d.closeCtx) != nil {
			return
		}
	}
}

// watchLossOnce watches the prefix until the watch ends.
func (d *Driver) watchLossOnce() {
	ctx, cancel := context.WithCancel(d.closeCtx)
	defer cancel()
	wch := d.cli.Watch(ctx, d.root, clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	var retry <-chan time.Time // checks that failed are tried again
	var bo backoff
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				return
			}
			if wr.Created {
				d.wmu.Lock()
				if d.from == 0 && !closedChan(d.watched) {
					close(d.watched)
				}
				d.from = wr.Header.Revision
				// Every settled key: the first watch's are all unchecked,
				// and a new watch may have missed deletes of any.
				d.unchecked = d.unchecked[:0]
				for _, l := range d.keys {
					if l.settled {
						d.unchecked = append(d.unchecked, l)
					}
				}
				d.wmu.Unlock()
				if !d.checkUnchecked(ctx) && retry == nil {
					retry = time.After(bo.step())
				}
			}
			if len(wr.Events) > 0 {
				d.wmu.Lock()
				for _, ev := range wr.Events {
					if ev.Type == mvccpb.DELETE {
						d.lostKey(string(ev.Kv.Key), "its key was deleted")
					}
				}
				d.wmu.Unlock()
			}
			if wr.Err() != nil {
				return // compacted or cancelled by the server: watch anew
			}
		case <-d.wkick:
			if !d.checkUnchecked(ctx) && retry == nil {
				retry = time.After(bo.step())
			}
		case <-retry:
			retry = nil
			if d.checkUnchecked(ctx) {
				bo.reset()
			} else {
				retry = time.After(bo.step())
			}
		}
	}
}

// checkUnchecked owner-checks the keys the watch may have missed deletes
// of, if the watch exists, and reports the lost ones. It reports false if
// some could not be checked (they stay unchecked).
func (d *Driver) checkUnchecked(ctx context.Context) bool {
	d.wmu.Lock()
	if d.from == 0 || len(d.unchecked) == 0 {
		d.wmu.Unlock()
		return true
	}
	ls := d.unchecked
	d.unchecked = nil
	d.wmu.Unlock()

	type answer struct {
		l   *lock
		ok  bool
		err error
	}
	answers := make(chan answer, len(ls)) // room for every answer: done must not block
	ops := make([]*ownerOp, 0, len(ls))
	for _, l := range ls {
		if l.rev != 0 {
			ops = append(ops, &ownerOp{l: l, done: func(ok bool, err error) { answers <- answer{l, ok, err} }})
		}
	}
	if err := d.checks.enqueue(ops...); err != nil {
		return true // closed: nothing to report any more
	}
	var failed []*lock
	for range ops {
		var a answer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return true
		}
		switch {
		case a.err != nil:
			failed = append(failed, a.l)
		case !a.ok:
			d.wmu.Lock()
			if d.keys[a.l.key] == a.l {
				d.lostKey(a.l.key, "its key was deleted")
			}
			d.wmu.Unlock()
		}
	}
	if len(failed) == 0 {
		return true
	}
	d.wmu.Lock()
	d.unchecked = append(d.unchecked, failed...)
	d.wmu.Unlock()
	return false
}

// NotifyLost arranges for f to be called once, when l's loss is reported
// (driver.LossNotifier): by the driver's loss watch, a renewal that finds
// the key not ours, or the etcd client's closing.
func (l *lock) NotifyLost(f func()) {
	l.notify.Store(&f)
	if l.gone.Load() {
		if p := l.notify.Swap(nil); p != nil {
			(*p)()
		}
	}
}

func closedChan(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var _ driver.LossNotifier = (*lock)(nil)
