package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// Acquire creates req.Name's key for this driver and, with req.Wait, waits
// until it is the oldest of the name (driver.Driver). A key it leaves
// without the lock is deleted before it returns, or in the background.
func (d *Driver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	if d.cli.Ctx().Err() != nil { // clientv3 would retry until ctx ends
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, errClientClosed)
	}
	secs := int64((req.TTL + time.Second - 1) / time.Second)
	for attempt := 0; ; attempt++ {
		ls, err := d.leaseFor(ctx, secs)
		if err != nil {
			return nil, driver.Validity{}, d.engineErr(ctx, err)
		}
		l, v, err := d.acquire(ctx, req, ls)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// Our lease expired unseen (we were idle past its TTL, or
			// paused): not an engine failure, so make a new one and try
			// once more; twice in a row may pass as well.
			ls.markDead()
			if attempt == 0 {
				continue
			}
			err = driver.Unavailable(fmt.Errorf("etcdlock: lock %q: lease %x expired before it could be used: %w",
				req.Name, int64(ls.id), err))
		}
		return l, v, d.engineErr(ctx, err)
	}
}

func (d *Driver) acquire(ctx context.Context, req driver.Request, ls *lease) (driver.Lock, driver.Validity, error) {
	pfx := d.namePrefix(req.Name)
	key := d.queueKey(pfx, ls)
	put := clientv3.OpPut(key, "", clientv3.WithLease(ls.id))

	if !req.Wait {
		// Create our key only if the name has no key at all: one round trip,
		// and nothing to clean up when someone else holds the lock.
		resp, err := d.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(pfx), "=", 0).WithPrefix()).
			Then(put).Commit()
		if err != nil {
			// The put may have happened before the reply was lost.
			d.abandon(ctx, d.track(ls, req.Name, key, 0))
			return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, err)
		}
		if !resp.Succeeded {
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
		l := d.track(ls, req.Name, key, resp.Header.Revision)
		return l.held(), ls.validity(), nil
	}

	// Enqueue and read the three newest keys of the name: ours, the one just
	// ahead of it and whether there is any further ahead.
	resp, err := d.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(put, clientv3.OpGet(pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend),
			clientv3.WithLimit(3), clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		d.abandon(ctx, d.track(ls, req.Name, key, 0))
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, err)
	}
	if !resp.Succeeded {
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: queue key %q already exists", key)
	}
	l := d.track(ls, req.Name, key, resp.Header.Revision)
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) < 2 {
		return l.held(), ls.validity(), nil
	}
	if err := l.wait(ctx, string(kvs[1].Key), len(kvs) == 2); err != nil {
		d.abandon(ctx, l)
		return nil, driver.Validity{}, err
	}
	return l.held(), ls.validity(), nil
}

// wait blocks until l's key is the oldest of its name. pred is the key just
// ahead, as last read, and sole says whether it was the only one ahead.
//
// Each predecessor is watched from the current revision, so the server puts
// the watcher in its synced group and sends the delete at once (see
// NOTES.md), and the queue is read again once the watch is created, so a
// delete that happened before cannot be missed. When the predecessor was the
// only key ahead, its deletion means we are at the head (no key can be
// created with a lower revision than ours), and the lock is ours without
// another read: the handoff costs the holder's delete and one watch event.
// Our own key's deletion, from then on, is reported by its own watch (Lost).
//
// A watch the server ends is started again after a backoff, and a closed
// client ends the wait: neither may turn the loop into a spin.
func (l *lock) wait(ctx context.Context, pred string, sole bool) error {
	var (
		wch     clientv3.WatchChan
		wcancel context.CancelFunc = func() {}
		watched string
		since   time.Time // when the current watch started
		recheck bool
		bo      backoff
	)
	defer func() { wcancel() }()
	ka := time.NewTimer(l.ls.ttl / 3)
	defer ka.Stop()

	for {
		if recheck {
			recheck = false
			next, alone, err := l.predecessor(ctx)
			if err != nil {
				return err
			}
			if next == "" {
				return nil
			}
			pred, sole = next, alone
		}
		if pred != watched {
			wcancel()
			wch, wcancel = l.watchDelete(ctx, pred)
			watched, since = pred, time.Now()
		}
		select {
		case wr, ok := <-wch:
			switch {
			case !ok:
				return l.watchEnded(ctx)
			case wr.Err() != nil:
				if time.Since(since) > backoffMax {
					bo.reset()
				}
				if err := bo.wait(ctx); err != nil {
					return err
				}
				watched = "" // start a new watch after re-reading
				recheck = true
			case wr.Created:
				recheck = true
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					if sole {
						return nil
					}
					recheck = true
				}
			}
		case <-l.lost:
			return l.lostErr()
		case <-ka.C:
			// Nobody else may be renewing the lease while we wait.
			if _, err := l.ls.keepAlive(ctx); err != nil {
				if errors.Is(err, driver.ErrLockLost) || ctx.Err() != nil || l.d.cli.Ctx().Err() != nil {
					return l.d.engineErr(ctx, err)
				}
				ka.Reset(l.ls.ttl / 10) // transient: try again soon
				continue
			}
			ka.Reset(l.ls.ttl / 3)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watchEnded says why a wait's watch channel closed: clientv3 closes it only
// when the watch's context ends or the client is closed.
func (l *lock) watchEnded(ctx context.Context) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case l.d.cli.Ctx().Err() != nil:
		return fmt.Errorf("etcdlock: wait for %q: %w", l.name, errClientClosed)
	case l.d.closeCtx.Err() != nil:
		return errClosed
	}
	return driver.Unavailable(fmt.Errorf("etcdlock: wait for %q: the watch ended unasked", l.name))
}

// watchDelete watches key for deletion from the current revision on.
func (l *lock) watchDelete(ctx context.Context, key string) (clientv3.WatchChan, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	return l.d.cli.Watch(ctx, key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut()), cancel
}

// predecessor re-reads l's key and returns the key just ahead of it, or ""
// if l is at the head of the queue, and whether that key is the only one
// ahead. It returns an error matching dlock.ErrLockLost if l's key is gone.
func (l *lock) predecessor(ctx context.Context) (string, bool, error) {
	if l.d.cli.Ctx().Err() != nil { // clientv3 would retry until ctx ends
		return "", false, fmt.Errorf("etcdlock: wait for %q: %w", l.name, errClientClosed)
	}
	resp, err := l.d.cli.Txn(ctx).Then(
		clientv3.OpGet(l.key, clientv3.WithKeysOnly()),
		clientv3.OpGet(l.pfx, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(l.rev-1), clientv3.WithLimit(2),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return "", false, fmt.Errorf("etcdlock: read the queue of %q: %w", l.name, l.d.engineErr(ctx, err))
	}
	own := resp.Responses[0].GetResponseRange().Kvs
	if len(own) == 0 || own[0].CreateRevision != l.rev {
		l.markLost("it vanished while waiting (lease expired or key deleted)")
		return "", false, l.lostErr()
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		return string(kvs[0].Key), len(kvs) == 1, nil
	}
	return "", false, nil
}
