package etcdlock

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// Elections. A leader is the holder of the name's exclusive lock, and its
// value is the value of its writer's key, written by the put that queues
// the key (Request.Value) and replaced by SetValue. The holder is the
// name's oldest key if it is a writer's: a reader or a permit at the head
// means that nobody holds it exclusively.

var (
	_ driver.Observer    = (*Driver)(nil)
	_ driver.ValueSetter = (*lock)(nil)
)

// SetValue replaces the value of a held writer's key (driver.ValueSetter),
// in one transaction that puts it only if the key is still the one this
// lock created, on this lock's lease. Otherwise the lock is lost: it
// returns an error matching driver.ErrLockLost and changes nothing.
func (l *lock) SetValue(ctx context.Context, value string) error {
	if l.mode != driver.Exclusive || l.limit > 0 {
		return fmt.Errorf("etcdlock: set the value of %q: %w", l.key,
			driver.InvalidArgument("lock", l.mode, "an exclusive lock (a value is an election leader's)"))
	}
	if l.gone.Load() {
		return l.lostErr()
	}
	if l.d.cli.Ctx().Err() != nil { // clientv3 would retry until ctx ends
		l.markLost("its etcd client was closed: it can no longer be renewed or released")
		return l.lostErr()
	}
	resp, err := l.d.cli.Txn(ctx).If(l.ours()...).Then(clientv3.OpPut(l.key, value, clientv3.WithIgnoreLease())).Commit()
	if err != nil {
		return fmt.Errorf("etcdlock: set the value of %q: %w", l.key, l.d.engineErr(ctx, err))
	}
	if !resp.Succeeded {
		l.markLost("its key was deleted")
		return l.lostErr()
	}
	return nil
}

// usable says why the driver can no longer talk to etcd, or nil.
func (d *Driver) usable() error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	switch {
	case closed:
		return errClosed
	case d.cli.Ctx().Err() != nil: // clientv3 would retry until ctx ends
		return errClientClosed
	}
	return nil
}

// Holder returns the exclusive holder of name (driver.Observer): the
// name's oldest key, if it is a writer's, read linearizably; the zero
// Holder if the name has no key or readers or permits hold it.
func (d *Driver) Holder(ctx context.Context, name string) (driver.Holder, error) {
	if err := d.usable(); err != nil {
		return driver.Holder{}, fmt.Errorf("etcdlock: holder of %q: %w", name, err)
	}
	pfx := d.namePrefix(name)
	resp, err := d.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithLimit(1),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return driver.Holder{}, fmt.Errorf("etcdlock: holder of %q: %w", name, d.engineErr(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return driver.Holder{}, nil
	}
	return holderOf(pfx, resp.Kvs[0]), nil
}

// holderOf is the Holder that the oldest key kv of the name pfx makes.
func holderOf(pfx string, kv *mvccpb.KeyValue) driver.Holder {
	if kv == nil || !isWriter(pfx, string(kv.Key)) {
		return driver.Holder{}
	}
	return driver.Holder{Token: uint64(kv.CreateRevision), Value: string(kv.Value)}
}

// Observe follows the holder of name (driver.Observer) with one watch on
// the name's keys: it keeps them as of a read and applies every later put
// and delete, and sends the holder they make whenever it changes. The
// first read is made before Observe returns, within grantTimeout, so that
// what would keep it from ever observing (etcd out of reach, permission
// denied) is returned rather than retried unseen. A watch that ends (the
// history it needed was compacted, the server cancelled it) is started
// again after a backoff, with a new read; clientv3 resumes it by itself
// across reconnections. The channel holds the latest holder not yet
// received, never a backlog, and is closed when ctx ends, the driver is
// closed or its etcd client is.
func (d *Driver) Observe(ctx context.Context, name string) (<-chan driver.Holder, error) {
	if err := d.usable(); err != nil {
		return nil, fmt.Errorf("etcdlock: observe %q: %w", name, err)
	}
	o := &observer{d: d, pfx: d.namePrefix(name), ch: make(chan driver.Holder, 1)}
	rctx, rcancel := context.WithTimeout(ctx, grantTimeout)
	if err := o.read(rctx); err != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no answer from etcd within %v: %w", grantTimeout, err)
		}
		rcancel()
		return nil, fmt.Errorf("etcdlock: observe %q: %w", name, d.engineErr(ctx, err))
	}
	rcancel()
	o.emit()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("etcdlock: observe %q: %w", name, errClosed)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(d.closeCtx, cancel)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(o.ch)
		defer cancel()
		defer stop()
		o.run(ctx)
	}()
	return o.ch, nil
}

// observer is one Observe call.
type observer struct {
	d   *Driver
	pfx string
	ch  chan driver.Holder // capacity 1: the latest holder not yet received

	keys map[string]*mvccpb.KeyValue // the name's keys, as of rev and the events after it
	rev  int64                       // revision of the last read
	sent driver.Holder               // the holder last sent
	any  bool                        // something was sent
}

// run watches until ctx ends or the etcd client is closed. A closed
// client's Watch returns a closed channel at once: the backoff and the
// client check keep that from being a spin.
func (o *observer) run(ctx context.Context) {
	var bo backoff
	for ctx.Err() == nil && o.d.cli.Ctx().Err() == nil {
		started := time.Now()
		o.watch(ctx)
		if time.Since(started) > backoffMax {
			bo.reset() // that watch served a while: not a loop that ends at once
		}
		if bo.wait(ctx) != nil {
			return
		}
	}
}

// watch watches the name's keys from the current revision (a synced
// watcher: events arrive as they are applied, see NOTES.md), reads them
// once the watch exists, then applies the events after that read. It
// returns when the watch ends or a read fails.
func (o *observer) watch(ctx context.Context) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	read := false
	for wr := range o.d.cli.Watch(wctx, o.pfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify()) {
		if wr.Err() != nil {
			return // compacted or cancelled by the server: watch and read again
		}
		if wr.Created {
			if err := o.read(wctx); err != nil {
				return
			}
			read = true
			o.emit()
			continue
		}
		if !read {
			continue // not sent before Created; nothing to apply them to
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision <= o.rev {
				continue // in the read already
			}
			switch ev.Type {
			case mvccpb.PUT:
				o.keys[string(ev.Kv.Key)] = ev.Kv
			case mvccpb.DELETE:
				delete(o.keys, string(ev.Kv.Key))
			}
		}
		o.emit()
	}
}

// read replaces the keys kept with the name's keys now (a linearizable
// read, issued after the watch was created: every later change arrives as
// an event).
func (o *observer) read(ctx context.Context) error {
	resp, err := o.d.cli.Get(ctx, o.pfx, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	o.keys = make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		o.keys[string(kv.Key)] = kv
	}
	o.rev = resp.Header.Revision
	return nil
}

// emit sends the holder the keys make if it is not the one last sent,
// replacing the one not yet received, if any. Only this goroutine sends, so
// the send after the drain never blocks. Tokens never decrease: the holder
// is the oldest key, a new key is newer than every key there is, and each
// read is at a later revision than the events before it.
func (o *observer) emit() {
	var oldest *mvccpb.KeyValue
	for _, kv := range o.keys {
		if oldest == nil || kv.CreateRevision < oldest.CreateRevision {
			oldest = kv
		}
	}
	h := holderOf(o.pfx, oldest)
	if o.any && h == o.sent {
		return
	}
	o.sent, o.any = h, true
	select {
	case <-o.ch:
	default:
	}
	o.ch <- h
}
