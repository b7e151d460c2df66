package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
)

// wait blocks until nothing ahead of l's key keeps it out; a is what did,
// as last read.
//
// What is watched is watched from the current revision, so the server puts
// the watcher in its synced group and sends the delete at once (see
// NOTES.md), and the queue is read again once the watch is created, so a
// delete that happened before cannot be missed. When the blockers read are
// all there are (a writer's or a reader's only key ahead, a permit's keys
// ahead), their deletions are counted down and the last that matters lets
// us in without another read (no key can be created with a lower revision
// than ours): the handoff costs the holder's delete and one watch event.
// Our own key's deletion, from then on, is reported by its own watch
// (Lost).
//
// While it waits, l keeps the driver's lease alive and re-reads its own key
// at every wake-up, so a waiter whose lease expired, or whose key was
// deleted, returns ErrLockLost rather than waiting for ever (etcd#16221,
// etcd#19597); and a countdown that ends when the lease is not known to be
// alive reads our key before claiming, so a candidate whose lease expired
// while it waited is never granted (etcd#11007's zombie candidate). A watch the server ends is started again after a backoff,
// and a closed client ends the wait: neither may turn the loop into a spin.
func (l *lock) wait(ctx context.Context, a ahead) error {
	var (
		wch     clientv3.WatchChan
		wcancel context.CancelFunc = func() {}
		watched string
		since   time.Time // when the current watch started
		recheck bool
		bo      backoff
	)
	defer func() { wcancel() }()
	lost := l.Lost()
	ka := time.NewTimer(l.ls.ttl / 3)
	defer ka.Stop()

	for {
		if recheck {
			recheck = false
			next, in, err := l.recheck(ctx)
			if err != nil {
				return err
			}
			if in {
				return nil
			}
			a = next
		}
		if a.watch != watched {
			wcancel()
			wch, wcancel = l.watchDelete(ctx, a.watch, a.prefix)
			watched, since = a.watch, time.Now()
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
				if ev.Type != mvccpb.DELETE {
					continue
				}
				switch k := string(ev.Kv.Key); {
				case a.keys[k] && a.exact:
					delete(a.keys, k)
					if len(a.keys) < l.need() {
						if l.leaseLive() {
							return nil
						}
						// Our lease may have expired unseen (a pause, a
						// partition): our key may be gone with it, and the
						// blocker's deletion would then let a zombie in
						// (etcd#11007). Read our key before claiming.
						recheck = true
					}
				case a.keys[k], k == l.key:
					recheck = true
				}
			}
		case <-lost:
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

// leaseLive says whether l's lease is known, on our clock, to be alive:
// granted or kept alive less than its TTL ago, and not found expired.
func (l *lock) leaseLive() bool {
	left, dead := l.ls.left()
	return !dead && left > 0
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

// watchDelete watches key, or with prefix every key under it, for
// deletions from the current revision on.
func (l *lock) watchDelete(ctx context.Context, key string, prefix bool) (clientv3.WatchChan, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	opts := []clientv3.OpOption{clientv3.WithCreatedNotify(), clientv3.WithFilterPut()}
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	return l.d.cli.Watch(ctx, key, opts...), cancel
}

// recheck re-reads l's key and the nearest blockers ahead of it (see
// blockers), and reports true if none keeps l out. It returns an error
// matching dlock.ErrLockLost if l's key is gone.
func (l *lock) recheck(ctx context.Context) (ahead, bool, error) {
	if l.d.cli.Ctx().Err() != nil { // clientv3 would retry until ctx ends
		return ahead{}, false, fmt.Errorf("etcdlock: wait for %q: %w", l.name, errClientClosed)
	}
	start, end := l.blockers()
	resp, err := l.d.cli.Txn(ctx).Then(
		clientv3.OpGet(l.key, clientv3.WithKeysOnly()),
		// The limit is applied after the revision filter (etcd's
		// executeRange), so More says whether there are more.
		clientv3.OpGet(start, append(l.readOpts(end), clientv3.WithMaxCreateRev(l.rev-1), clientv3.WithLimit(l.readLimit(0)))...),
	).Commit()
	if err != nil {
		return ahead{}, false, fmt.Errorf("etcdlock: read the queue of %q: %w", l.name, l.d.engineErr(ctx, err))
	}
	own := resp.Responses[0].GetResponseRange().Kvs
	if len(own) == 0 || own[0].CreateRevision != l.rev {
		l.markLost("it vanished while waiting (lease expired or key deleted)")
		return ahead{}, false, l.lostErr()
	}
	rr := resp.Responses[1].GetResponseRange()
	a, in := l.aheadOf(rr.Kvs, rr.More)
	return a, in, nil
}
