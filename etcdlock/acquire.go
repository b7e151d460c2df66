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
// until nothing ahead of it keeps it out (driver.Driver): for a writer, no
// key at all; for a reader, no writer's key; for one of n permits, fewer
// than n keys. A key it leaves without the lock is deleted before it
// returns, or in the background.
func (d *Driver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	switch {
	case req.Limit < 0:
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, driver.InvalidArgument("limit", req.Limit, "0 (a lock) or a number of permits >= 1"))
	case req.Mode != driver.Exclusive && req.Mode != driver.Shared:
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, driver.InvalidArgument("mode", req.Mode, "Exclusive or Shared"))
	case req.Limit > 0 && req.Mode != driver.Exclusive:
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, driver.InvalidArgument("mode", req.Mode, "Exclusive with a limit (a semaphore's permits are not shared)"))
	case req.Value != "" && (req.Mode != driver.Exclusive || req.Limit > 0):
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name,
			driver.InvalidArgument("value", "non-empty", "no value with Shared or a limit (a value is an exclusive holder's: an election's leader)"))
	}
	if d.cli.Ctx().Err() != nil { // clientv3 would retry until ctx ends
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, errClientClosed)
	}
	secs := int64((req.TTL + time.Second - 1) / time.Second)
	var bo backoff
	for attempt, resent := 0, false; ; attempt++ {
		ls, err := d.leaseFor(ctx, secs)
		if err != nil {
			return nil, driver.Validity{}, d.engineErr(ctx, err)
		}
		l, v, err := d.acquire(ctx, req, ls)
		var nl noAnswer
		if errors.As(err, &nl) && nl.clean && !resent && transient(err) && ctx.Err() == nil && bo.wait(ctx) == nil {
			// A blip (the connection reset under the request) and our
			// key, if the request made one, is deleted: try once more
			// rather than report an outage that has passed. (A blocking
			// Lock is retried by the portable layer anyway.)
			resent = true
			continue
		}
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

func (d *Driver) acquire(ctx context.Context, req driver.Request, ls *lease) (_ driver.Lock, _ driver.Validity, err error) {
	pfx := d.namePrefix(req.Name)
	key := d.queueKey(pfx, req.Mode, req.Limit, ls)
	put := clientv3.OpPut(key, req.Value, clientv3.WithLease(ls.id)) // a leader's value from the start
	cmps, conflict := guard(pfx, req.Limit)
	l := d.track(ls, req, pfx, key, 0)
	// From before the key exists, its deletion is the lock's loss (loss.go).
	d.watchKey(l)
	defer func() {
		if err != nil {
			d.unwatch(l)
		}
	}()

	if !req.Wait {
		return d.try(ctx, l, put, cmps, conflict)
	}

	// Enqueue and read, newest first, what may keep our key out: our own
	// key (the newest of all) aside, a writer's or a reader's nearest
	// blocker and whether there are more; every permit ahead of a permit.
	start, end := l.blockers()
	resp, err := d.cli.Txn(ctx).
		If(append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))...).
		Then(put, clientv3.OpGet(start, append(l.readOpts(end), clientv3.WithLimit(l.readLimit(1)))...)).
		Else(conflict...).
		Commit()
	if err != nil {
		d.abandon(ctx, l) // the put may have happened before the reply was lost
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: lock %q: %w", req.Name, err)
	}
	if !resp.Succeeded {
		if err := mismatch(req.Name, pfx, req.Limit, conflictKey(resp)); err != nil {
			return nil, driver.Validity{}, err
		}
		return nil, driver.Validity{}, fmt.Errorf("etcdlock: queue key %q already exists", key)
	}
	l.rev = resp.Header.Revision
	d.covered(l)
	rr := resp.Responses[1].GetResponseRange()
	kvs, more := rr.Kvs, rr.More
	if len(kvs) > 0 && string(kvs[0].Key) == key {
		kvs = kvs[1:]
	}
	if l.limit == 0 && len(kvs) > 1 {
		kvs, more = kvs[:1], true
	}
	a, ok := l.aheadOf(kvs, more)
	if ok {
		return l, ls.validity(), nil
	}
	if err := l.wait(ctx, a); err != nil {
		d.abandon(ctx, l)
		return nil, driver.Validity{}, err
	}
	return l, ls.validity(), nil
}

// noAnswer is the error of an attempt whose transaction failed without an
// answer; clean says that the key it may have made is deleted.
type noAnswer struct {
	error
	clean bool
}

func (e noAnswer) Unwrap() error { return e.error }

// try makes one attempt, for a request without Wait: one transaction that
// creates our key only if nothing keeps it out. A writer needs the name to
// have no key at all, a reader no writer's key (held or waiting: readers
// do not pass a waiting writer); a permit is created if the name's keys
// are permits of its limit, and kept if it is among the first n, deleted
// at once otherwise.
func (d *Driver) try(ctx context.Context, l *lock, put clientv3.Op, cmps []clientv3.Cmp, conflict []clientv3.Op) (driver.Lock, driver.Validity, error) {
	var then []clientv3.Op
	switch {
	case l.limit > 0:
		then = []clientv3.Op{put, clientv3.OpGet(kindPrefix(l.pfx, driver.Exclusive, l.limit), clientv3.WithPrefix(), clientv3.WithCountOnly())}
	case l.mode == driver.Shared:
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(l.pfx), "=", 0).WithRange(writersEnd(l.pfx)))
		then = []clientv3.Op{put}
	default:
		// No key at all, permits included: a mismatch is told apart below.
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.pfx), "=", 0).WithPrefix()}
		then = []clientv3.Op{put}
	}
	resp, err := d.cli.Txn(ctx).If(cmps...).Then(then...).Else(conflict...).Commit()
	if err != nil {
		// The put may have happened before the reply was lost.
		clean := d.abandon(ctx, l)
		return nil, driver.Validity{}, noAnswer{fmt.Errorf("etcdlock: lock %q: %w", l.name, err), clean}
	}
	if !resp.Succeeded {
		if err := mismatch(l.name, l.pfx, l.limit, conflictKey(resp)); err != nil {
			return nil, driver.Validity{}, err
		}
		return nil, driver.Validity{}, driver.ErrNotAcquired
	}
	l.rev = resp.Header.Revision
	if l.limit > 0 && resp.Responses[1].GetResponseRange().Count > int64(l.limit) {
		d.abandon(ctx, l)
		return nil, driver.Validity{}, driver.ErrNotAcquired
	}
	l.d.covered(l)
	return l, l.ls.validity(), nil
}

// conflictKey is the key a failed guard found (see guard), or "".
func conflictKey(resp *clientv3.TxnResponse) string {
	for _, r := range resp.Responses {
		if rr := r.GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			return string(rr.Kvs[0].Key)
		}
	}
	return ""
}

// need is how many keys ahead keep l out: one (any key for a writer, a
// writer's for a reader) or, for a permit, its limit.
func (l *lock) need() int { return max(l.limit, 1) }

// blockers is the range of the keys that may keep l out: every key of the
// name for a writer, the writers' for a reader, its limit's permits for a
// permit.
func (l *lock) blockers() (string, string) {
	switch {
	case l.limit > 0:
		p := kindPrefix(l.pfx, driver.Exclusive, l.limit)
		return p, clientv3.GetPrefixRangeEnd(p)
	case l.mode == driver.Shared:
		return l.pfx, writersEnd(l.pfx)
	}
	return l.pfx, clientv3.GetPrefixRangeEnd(l.pfx)
}

// readOpts read the blockers in [start, end), newest first.
func (l *lock) readOpts(end string) []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend),
		clientv3.WithKeysOnly()}
}

// readLimit is how many blockers a read of them needs: a writer or a
// reader needs only the nearest (n more than that, for keys not ahead of
// l), a permit all of them (0: no limit).
func (l *lock) readLimit(n int) int64 {
	if l.limit > 0 {
		return 0
	}
	return int64(1 + n)
}

// ahead is what a waiter waits on: the blockers ahead of it, and how to
// hear of their deletion.
type ahead struct {
	watch  string          // the key to watch for deletes, or with prefix the range
	prefix bool            // watch every key under watch (a permit's limit)
	keys   map[string]bool // the blockers ahead whose deletions matter
	exact  bool            // keys are all the blockers ahead: count them down
}

// aheadOf makes the ahead of l from the blockers ahead of it, newest first
// (for a writer or a reader the nearest, for a permit every one), and
// whether there are more. It reports true if they do not keep l out.
//
// A permit's waiter keeps the set of every permit key ahead of it, which
// can only shrink (no key is created with a lower revision than ours), and
// counts it down with the deletes its prefix watch reports: no read per
// release, whichever holder leaves. A writer or a reader watches only the
// nearest blocker and, if there were more, reads again when it goes.
func (l *lock) aheadOf(kvs []*mvccpb.KeyValue, more bool) (ahead, bool) {
	if len(kvs) < l.need() {
		return ahead{}, true
	}
	a := ahead{keys: make(map[string]bool, len(kvs)), exact: !more}
	for _, kv := range kvs {
		a.keys[string(kv.Key)] = true
	}
	if l.limit > 0 {
		a.watch, a.prefix = kindPrefix(l.pfx, driver.Exclusive, l.limit), true
	} else {
		a.watch = string(kvs[0].Key)
	}
	return a, false
}
