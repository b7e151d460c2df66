// Package etcdlock is the etcd driver of dlock: a fair (FIFO) queue of keys
// ordered by create revision, bound to a lease, with the revision as a
// strong fencing token.
//
//	cli, _ := clientv3.New(clientv3.Config{Endpoints: []string{"10.0.0.1:2379"}})
//	c, _ := etcdlock.New(cli, dlock.WithTTL(10*time.Second))
//
// or, owning its own etcd client, dlock.Open(ctx, "etcd://h1:2379,h2:2379/prefix")
// after importing this package ("etcds://" for TLS; see the URL opener).
//
// # How a lock is kept in etcd
//
// A waiter for name N creates the key prefix/<escaped N>/<lease id>-<seq>
// bound to its driver's lease, in one transaction that also reads the two
// newest keys of N. It holds the lock when its key has the lowest create
// revision among N's keys; otherwise it watches only the key just ahead of
// it (no thundering herd) and, after every wake-up, re-reads its own key and
// its new predecessor: a waiter whose key vanished (its lease expired, an
// operator deleted it) returns an error matching dlock.ErrLockLost instead of
// waiting forever (unlike concurrency.Mutex, etcd#19597). The token is the
// holder key's create revision, linearizable and monotonic cluster-wide.
// Release and renewal compare that create revision, so they never touch a
// later holder's key (unlike concurrency.Mutex.Unlock, etcd#22082). Each
// lock watches its own key, so loss is reported per lock, not per session
// (etcd#6127).
//
// # Leases
//
// A driver keeps one etcd lease per distinct TTL (in practice one), shared by
// all its locks and queue entries, created on first use. etcd counts lease
// TTLs in whole seconds and raises them to a server minimum (1.5 ×
// election timeout, 2 s with the defaults of a test cluster), so the TTL
// asked for is rounded up and the granted TTL is what Validity reports. A
// renewal is one KeepAliveOnce, shared by all renewals in flight at the
// time, plus a read of the lock's key. While an Acquire waits, it keeps the
// lease alive itself every TTL/3, since no held lock may be renewing it.
//
// # Handoff latency
//
// A waiter watches its predecessor from "now" (revision 0), waits for the
// watch to be created and only then re-reads the queue. etcd serves a watch
// that starts at a past revision from its "unsynced" group, which a loop
// catches up only every 100 ms; concurrency.Mutex watches from a past
// revision and so hands off in ~50-100 ms. See NOTES.md.
package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// DefaultPrefix is the key prefix used when Options.Prefix is empty.
const DefaultPrefix = "dlock"

// cleanupTimeout bounds the requests that clean up after a cancelled wait
// or a closed driver, which run on a context of their own.
const cleanupTimeout = 5 * time.Second

// Options configure a driver. The zero value means the documented defaults.
type Options struct {
	// Prefix is prepended to every key (DefaultPrefix if empty). Clients
	// that contend for the same locks must use the same prefix.
	Prefix string
}

// New returns a dlock client whose locks live in etcd under DefaultPrefix.
// It uses cli but does not own it: closing the dlock client leaves cli open.
func New(cli *clientv3.Client, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(cli, Options{})
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// NewDriver returns the etcd driver itself, for dlock.NewClient, when the
// Options need to differ from the defaults. It does not own cli.
func NewDriver(cli *clientv3.Client, o Options) (driver.Driver, error) {
	if cli == nil {
		return nil, fmt.Errorf("%w: etcd client = nil: want a *clientv3.Client", dlock.ErrInvalidArgument)
	}
	return newDriver(cli, o, false)
}

// Driver is an etcd connection used as a dlock driver.
type etcdDriver struct {
	cli  *clientv3.Client
	owns bool   // close cli on Close (made by the URL opener)
	root string // Prefix + "/"
	seq  atomic.Uint64

	closeCtx context.Context // cancelled by Close: stops watches and keep-alives
	closeFn  context.CancelFunc
	grant    chan struct{} // one lease grant at a time

	mu     sync.Mutex
	closed bool
	leases map[int64]*lease // by TTL asked for, in seconds
	warm   bool             // the idle watch that keeps the watch stream open is running
	wg     sync.WaitGroup   // per-lock watch goroutines
}

var (
	_ driver.Driver    = (*etcdDriver)(nil)
	_ driver.Capable   = (*etcdDriver)(nil)
	_ driver.Inspector = (*etcdDriver)(nil)
	_ driver.Lock      = (*lock)(nil)
)

var errClosed = errors.New("etcdlock: driver closed")

func newDriver(cli *clientv3.Client, o Options, owns bool) (*etcdDriver, error) {
	p := strings.TrimSuffix(o.Prefix, "/")
	if p == "" {
		p = DefaultPrefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &etcdDriver{
		cli: cli, owns: owns, root: p + "/",
		closeCtx: ctx, closeFn: cancel,
		grant:  make(chan struct{}, 1),
		leases: map[int64]*lease{},
	}, nil
}

// namePrefix is the key range of one lock name. The escaping never produces
// '/', so no name's range contains another name's keys ("a" vs "a/b").
func (d *etcdDriver) namePrefix(name string) string { return d.root + escape(name) + "/" }

// escape keeps unreserved URL characters and percent-encodes every other byte.
func escape(name string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

func (d *etcdDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingStrong,
		FIFO:    true,
		Scope:   "cluster",
		Notes: "tokens are etcd create revisions (linearizable, survive leader failover); " +
			"lease TTLs are whole seconds, at least the server minimum (1.5 x election timeout); " +
			"a leader change extends leases, never shortens them",
	}
}

func (d *etcdDriver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errClosed
	}
	d.closed = true
	leases := make([]*lease, 0, len(d.leases))
	for _, l := range d.leases {
		leases = append(leases, l)
	}
	d.mu.Unlock()
	d.closeFn()
	d.wg.Wait()
	// Revoking frees at once whatever is still queued or held on our leases;
	// where it fails (the client is already gone) the leases simply expire.
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, l := range leases {
		_, _ = d.cli.Revoke(ctx, l.id)
	}
	if d.owns {
		return d.cli.Close()
	}
	return nil
}

func (d *etcdDriver) Status(ctx context.Context, name string) (driver.Status, error) {
	resp, err := d.cli.Get(ctx, d.namePrefix(name), append(clientv3.WithFirstCreate(), clientv3.WithPrefix(), clientv3.WithKeysOnly())...)
	if err != nil {
		return driver.Status{}, err
	}
	if len(resp.Kvs) == 0 {
		return driver.Status{Waiters: 0}, nil
	}
	kv := resp.Kvs[0]
	st := driver.Status{Held: true, Token: uint64(kv.CreateRevision), Waiters: int(resp.Count) - 1}
	if kv.Lease != 0 {
		if ttl, err := d.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease)); err == nil && ttl.TTL > 0 {
			st.TTLLeft = time.Duration(ttl.TTL) * time.Second
		}
	}
	return st, nil
}

func (d *etcdDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	secs := int64((req.TTL + time.Second - 1) / time.Second)
	for attempt := 0; ; attempt++ {
		ls, err := d.leaseFor(ctx, secs)
		if err != nil {
			return nil, driver.Validity{}, err
		}
		l, v, err := d.acquire(ctx, req, ls)
		if attempt == 0 && errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// Our lease expired unseen (we were idle past its TTL): not an
			// engine failure, so make a new one and try once more.
			ls.markDead()
			continue
		}
		return l, v, err
	}
}

func (d *etcdDriver) acquire(ctx context.Context, req driver.Request, ls *lease) (driver.Lock, driver.Validity, error) {
	pfx := d.namePrefix(req.Name)
	key := fmt.Sprintf("%s%x-%d", pfx, int64(ls.id), d.seq.Add(1))
	put := clientv3.OpPut(key, "", clientv3.WithLease(ls.id))

	if !req.Wait {
		// Create our key only if the name has no key at all: one round trip,
		// and nothing to clean up when someone else holds the lock.
		resp, err := d.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(pfx), "=", 0).WithPrefix()).
			Then(put).Commit()
		if err != nil {
			d.cleanup(key) // the put may have happened before the reply was lost
			return nil, driver.Validity{}, err
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
		d.cleanup(key)
		return nil, driver.Validity{}, err
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
		d.cleanupRev(key, l.rev)
		return nil, driver.Validity{}, err
	}
	return l.held(), ls.validity(), nil
}

// cleanup deletes a queue key whose creation is in doubt. Deleting by name
// is safe here: the name carries our lease id and sequence number, so no one
// else ever writes it.
func (d *etcdDriver) cleanup(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, _ = d.cli.Delete(ctx, key)
}

// cleanupRev deletes our queue key if it is still the one we created.
func (d *etcdDriver) cleanupRev(key string, rev int64) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	_, _ = d.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(clientv3.OpDelete(key)).Commit()
}

// lock is one queue key: a waiter's until it reaches the head, then a held
// lock's.
type lock struct {
	d    *etcdDriver
	ls   *lease
	name string
	key  string
	pfx  string
	rev  int64 // create revision of key: the fencing token
	lost chan struct{}
	stop context.CancelFunc // stops the watch on key
	once sync.Once
	gone atomic.Bool // lost was closed
	why  atomic.Value
}

// track makes the lock for a new queue key.
func (d *etcdDriver) track(ls *lease, name, key string, rev int64) *lock {
	return &lock{d: d, ls: ls, name: name, key: key, pfx: d.namePrefix(name), rev: rev,
		lost: make(chan struct{}), stop: func() {}}
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

// untrack stops watching l's key.
func (d *etcdDriver) untrack(l *lock) { l.stop() }

// ownWatchDelay is how long a lock is held before its key gets a watch of
// its own. Many locks are released sooner; creating and cancelling a watch per
// lock costs ~0.5 ms of server and client CPU, 20% of an uncontended cycle.
// A deletion in the meantime is reported when the watch starts.
const ownWatchDelay = 10 * time.Millisecond

// watchOwn closes l.lost when l's key is deleted, by anyone or by the lease
// expiring. It watches from the current revision (a synced watcher, so the
// deletion arrives at once), then reads the key once the watch exists, so
// that a deletion before the watch is not missed.
func (l *lock) watchOwn(ctx context.Context) {
	defer l.d.wg.Done()
	t := time.NewTimer(ownWatchDelay)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return
	}
	for ctx.Err() == nil {
		wch := l.d.cli.Watch(ctx, l.key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					l.markLost("its key was deleted")
					return
				}
			}
			if wr.Err() != nil {
				break // compacted or cancelled by the server: watch again
			}
			if wr.Created {
				resp, err := l.d.cli.Get(ctx, l.key, clientv3.WithKeysOnly())
				if err != nil {
					return // client gone or ctx done; Renew and the clock take over
				}
				if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.rev {
					l.markLost("its key was deleted")
					return
				}
			}
		}
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
	v, err := l.ls.keepAlive(ctx)
	if err != nil {
		return driver.Validity{}, err
	}
	resp, err := l.d.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).Commit()
	if err != nil {
		return driver.Validity{}, err
	}
	if !resp.Succeeded {
		l.markLost("its key was deleted")
		return driver.Validity{}, l.lostErr()
	}
	return v, nil
}

// Release deletes the key if it is still the one this lock created.
func (l *lock) Release(ctx context.Context) error {
	resp, err := l.d.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).
		Then(clientv3.OpDelete(l.key)).Commit()
	// Whatever the outcome, the watch is of no more use: the portable layer
	// ends the lease, and a key left behind expires with the lease.
	l.d.untrack(l)
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: queue key %q was already gone", driver.ErrLockLost, l.key)
	}
	return nil
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
func (l *lock) wait(ctx context.Context, pred string, sole bool) error {
	var (
		wch     clientv3.WatchChan
		wcancel context.CancelFunc = func() {}
		watched string
		recheck bool
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
			watched = pred
		}
		select {
		case wr, ok := <-wch:
			switch {
			case !ok:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("etcdlock: watch on %q closed: %w", pred, context.Cause(l.d.closeCtx))
			case wr.Err() != nil:
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
				if errors.Is(err, driver.ErrLockLost) {
					return err
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

// watchDelete watches key for deletion from the current revision on.
func (l *lock) watchDelete(ctx context.Context, key string) (clientv3.WatchChan, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	return l.d.cli.Watch(ctx, key, clientv3.WithCreatedNotify(), clientv3.WithFilterPut()), cancel
}

// predecessor re-reads l's key and returns the key just ahead of it, or ""
// if l is at the head of the queue, and whether that key is the only one
// ahead. It returns an error matching dlock.ErrLockLost if l's key is gone.
func (l *lock) predecessor(ctx context.Context) (string, bool, error) {
	resp, err := l.d.cli.Txn(ctx).Then(
		clientv3.OpGet(l.key, clientv3.WithKeysOnly()),
		clientv3.OpGet(l.pfx, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(l.rev-1), clientv3.WithLimit(2),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return "", false, err
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
