package etcdlock

import (
	"context"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// Loss watching: one watch per etcd client and prefix, shared by the
// drivers on them (lossFan), over the whole prefix, for deletes only (puts
// are filtered by the server), from "now" (a synced watcher: a delete
// arrives as it is applied; NOTES.md). Every key of the driver's
// waiters and holders is registered in d.keys from just before the
// transaction that creates it until it is released or found lost, so a
// delete event of a registered key is that lock's loss, whoever deleted it
// (an operator, the lease expiring, Close's revocation); events of other
// clients' keys are dropped. A lock costs a map entry, not a goroutine:
// clientv3 serves each watch with a goroutine of its own, and the root one
// more per lock without driver.LossNotifier.
//
// The watch reports to d every delete after d.from: the revision it was
// created at, or the last it had dispatched when d joined it. A key created at or before it (the driver's first locks, made
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

// watchLossOnce follows the loss watch of d's client and root (a lossFan,
// shared with the other drivers on them) until it ends or d closes.
func (d *Driver) watchLossOnce() {
	ctx := d.closeCtx
	f, ended := d.joinFan()
	defer f.leave(d)
	var retry <-chan time.Time // checks that failed are tried again
	var bo backoff
	for {
		select {
		case <-ended:
			return // compacted, cancelled by the server, or the client closed: watch anew
		case <-ctx.Done():
			return
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

// lossFrom tells d that the loss watch reports to it every delete after
// rev (the watch was created at rev, or d joined it when it had reported
// every delete up to rev): every settled key is owner-checked, since a
// delete of it may have come before.
func (d *Driver) lossFrom(rev int64) {
	d.wmu.Lock()
	if d.from == 0 && !closedChan(d.watched) {
		close(d.watched)
	}
	d.from = rev
	// Every settled key: the first watch's are all unchecked, and a new
	// watch may have missed deletes of any.
	d.unchecked = d.unchecked[:0]
	for _, l := range d.keys {
		if l.settled {
			d.unchecked = append(d.unchecked, l)
		}
	}
	d.wmu.Unlock()
	select {
	case d.wkick <- struct{}{}:
	default:
	}
}

// lossDelete reports the loss of key's lock if key is one of d's.
func (d *Driver) lossDelete(key string) {
	d.wmu.Lock()
	d.lostKey(key, "its key was deleted")
	d.wmu.Unlock()
}

// A lossFan is the one loss watch of the drivers that share an etcd client
// and a root (several dlock clients of a process on one etcd client, as a
// worker pool or the peer benchmark has them). Each driver watching the
// prefix itself made the server send every delete under it once per
// driver, and the client decode and dispatch each: at 50 drivers, 51 watch
// events per increment of the shared counter (docs/BENCHMARKS-NOTES.md).
// The fan's one watch (deletes only, from "now") hands each delete to
// every driver subscribed, which drops the keys that are not its own.
//
// A driver that joins a watch already running is told the revision up to
// which the watch has dispatched deletes (the revision the watch was
// created at, or the last delete dispatched): every later delete reaches
// it, since events come in revision order and are dispatched under the
// fan's mutex, which joining takes; its keys created at or before that
// revision are owner-checked, as with a watch of its own.
type lossFan struct {
	key    fanKey
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu    sync.Mutex
	subs  map[*Driver]chan struct{} // each driver's channel, closed when the watch ends
	from  int64                     // every delete after from is dispatched from now on; 0: not created yet
	ended bool
}

type fanKey struct {
	cli  *clientv3.Client
	root string
}

// fans are the loss watches running, by client and root. Lock order:
// fans.mu, then a fan's mu, then a driver's wmu.
var fans = struct {
	mu sync.Mutex
	m  map[fanKey]*lossFan
}{m: map[fanKey]*lossFan{}}

// joinFan subscribes d to the loss watch of its client and root, starting
// it if none runs. The channel returned is closed when that watch ends.
func (d *Driver) joinFan() (*lossFan, <-chan struct{}) {
	k := fanKey{d.cli, d.root}
	fans.mu.Lock()
	defer fans.mu.Unlock()
	f := fans.m[k]
	if f == nil {
		ctx, cancel := context.WithCancel(context.Background())
		f = &lossFan{key: k, cancel: cancel, done: make(chan struct{}), subs: map[*Driver]chan struct{}{}}
		fans.m[k] = f
		go f.run(ctx, d.cli)
	}
	ended := make(chan struct{})
	f.mu.Lock()
	f.subs[d] = ended
	if f.from > 0 {
		d.lossFrom(f.from)
	}
	f.mu.Unlock()
	return f, ended
}

// leave unsubscribes d. The last driver to leave stops the watch; a
// driver leaving a watch that ended or that it stopped waits for its
// goroutine to return, so that nothing outlives the driver's Close.
func (f *lossFan) leave(d *Driver) {
	fans.mu.Lock()
	f.mu.Lock()
	delete(f.subs, d)
	if len(f.subs) == 0 && !f.ended {
		f.ended = true
		if fans.m[f.key] == f {
			delete(fans.m, f.key)
		}
		f.cancel()
	}
	ended := f.ended
	f.mu.Unlock()
	fans.mu.Unlock()
	if ended {
		<-f.done
	}
}

// run dispatches the watch's responses until it ends (the fan stopped,
// compacted past its revision, cancelled by the server, the client
// closed), then tells every subscribed driver.
func (f *lossFan) run(ctx context.Context, cli *clientv3.Client) {
	defer close(f.done)
	// Made here, not under fans.mu: clientv3's Watch blocks while the
	// connection is down (until the fan stops, if all leave meanwhile).
	wch := cli.Watch(ctx, f.key.root, clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	for wr := range wch {
		f.mu.Lock()
		if wr.Created {
			f.from = wr.Header.Revision
			for d := range f.subs {
				d.lossFrom(f.from)
			}
		}
		for _, ev := range wr.Events {
			if ev.Type != mvccpb.DELETE {
				continue
			}
			k := string(ev.Kv.Key)
			for d := range f.subs {
				d.lossDelete(k)
			}
			f.from = max(f.from, ev.Kv.ModRevision)
		}
		err := wr.Err()
		f.mu.Unlock()
		if err != nil {
			break
		}
	}
	fans.mu.Lock()
	if fans.m[f.key] == f {
		delete(fans.m, f.key)
	}
	f.mu.Lock()
	f.ended = true
	for d, c := range f.subs {
		close(c)
		delete(f.subs, d)
	}
	f.mu.Unlock()
	fans.mu.Unlock()
	f.cancel()
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
