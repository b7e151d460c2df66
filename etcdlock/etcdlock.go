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
// # When a delete fails
//
// A key that outlived its purpose would sit on the shared lease, which the
// driver's other locks and waiters keep alive, and block its name until the
// driver closed. So a Release whose delete fails (a cancelled context, etcd
// out of reach), and an Acquire that ends without the lock and cannot delete
// its queue key, hand the key to a goroutine that deletes it, owner-checked,
// retrying with backoff (50 ms doubling to 2 s; at once when another key is
// handed over) until it is gone or found not ours. The lease that carries
// it is retired: new keys go on a new lease, so the old one is renewed only
// while the locks already on it live. Close revokes every lease, deleting
// whatever is left, and after Close or the etcd client's closing nothing
// renews a lease: no key outlives its lease's TTL past the driver. Release
// may be called again after a failure: it returns nil once the key is
// deleted, by itself or in the background, and never touches a later
// holder's key.
//
// # Errors and time bounds
//
// Errors that may pass match dlock.ErrUnavailable, on which the portable
// layer retries a blocking Lock: the connection lost under a request, no
// leader, "request timed out", a leader change, too many requests, and one
// of the driver's own time bounds running out. Permission denied, failed
// authentication, invalid arguments, a full database, a closed client and
// the caller's own context ending do not. A wait that fails so gives up its
// place in the queue.
//
// Release returns within 5 s whatever context it is given, a lease grant
// gives up after 5 s (clientv3 would retry it until the caller's context
// ends), and Close within 1 s plus the closing of a client it owns; a lease
// Close could not revoke expires within its TTL, and Close says so.
//
// # A closed etcd client
//
// When the owner of cli closes it under the driver, every held lock
// reports itself lost at once (Lost closes, and Renew says ErrLockLost),
// waits and new Acquires end at once with an error that is not
// ErrUnavailable, and no loop of the driver calls the closed client again:
// every watch or retry loop backs off, and stops on a closed client.
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

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// DefaultPrefix is the key prefix used when Options.Prefix is empty.
const DefaultPrefix = "dlock"

// grantTimeout bounds a lease grant. clientv3 retries a grant on its own
// while the cluster cannot answer, so without a bound of ours a grant fails
// only when the caller's context ends, and never says why.
const grantTimeout = 5 * time.Second

// closeTimeout bounds Close's lease revocations, made all at once. A
// revocation only frees keys before their TTL: the portable layer has
// released what it held before Close, with a bound of its own, and
// dlock.Client.Close's bound is the sum of the two.
const closeTimeout = time.Second

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

	mu      sync.Mutex
	closed  bool
	leases  map[int64]*lease    // the lease new keys go on, by TTL asked for, in seconds
	all     map[*lease]struct{} // every lease granted and not known dead: Close revokes them
	warm    bool                // the idle watch that keeps the watch stream open is running
	orphans map[*lock]struct{}  // keys to delete in the background (orphans.go)
	reaping bool                // the goroutine deleting orphans is running
	kick    chan struct{}       // wakes it early
	wg      sync.WaitGroup      // every goroutine the driver starts; Close waits for them
}

var (
	_ driver.Driver    = (*etcdDriver)(nil)
	_ driver.Capable   = (*etcdDriver)(nil)
	_ driver.Inspector = (*etcdDriver)(nil)
	_ driver.Lock      = (*lock)(nil)
)

func newDriver(cli *clientv3.Client, o Options, owns bool) (*etcdDriver, error) {
	p := strings.TrimSuffix(o.Prefix, "/")
	if p == "" {
		p = DefaultPrefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &etcdDriver{
		cli: cli, owns: owns, root: p + "/",
		closeCtx: ctx, closeFn: cancel,
		grant:   make(chan struct{}, 1),
		leases:  map[int64]*lease{},
		all:     map[*lease]struct{}{},
		orphans: map[*lock]struct{}{},
		kick:    make(chan struct{}, 1),
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

// Close stops every goroutine of the driver, then revokes its leases, which
// deletes at once whatever keys are left on them. It returns within
// closeTimeout whatever etcd does; a lease it could not revoke expires
// within its TTL, since nothing renews it any more, and Close says so.
func (d *etcdDriver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errClosed
	}
	d.closed = true
	leases := make([]*lease, 0, len(d.all))
	for l := range d.all {
		leases = append(leases, l)
	}
	clear(d.orphans) // the revocations delete them
	d.mu.Unlock()
	d.closeFn()
	d.wg.Wait()
	err := d.revoke(leases)
	if d.owns {
		err = errors.Join(err, d.cli.Close())
	}
	return err
}

// revoke revokes leases all at once, within closeTimeout.
func (d *etcdDriver) revoke(leases []*lease) error {
	if len(leases) == 0 || d.cli.Ctx().Err() != nil {
		return nil // a closed client renews nothing: the leases expire
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	errs := make([]error, len(leases))
	var wg sync.WaitGroup
	for i, l := range leases {
		wg.Go(func() {
			_, err := d.cli.Revoke(ctx, l.id)
			if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) && d.cli.Ctx().Err() == nil {
				errs[i] = fmt.Errorf("etcdlock: revoke lease %x (its keys expire within %v): %w", int64(l.id), l.ttl, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (d *etcdDriver) Status(ctx context.Context, name string) (driver.Status, error) {
	if d.cli.Ctx().Err() != nil {
		return driver.Status{}, fmt.Errorf("etcdlock: status of %q: %w", name, errClientClosed)
	}
	resp, err := d.cli.Get(ctx, d.namePrefix(name), append(clientv3.WithFirstCreate(), clientv3.WithPrefix(), clientv3.WithKeysOnly())...)
	if err != nil {
		return driver.Status{}, fmt.Errorf("etcdlock: status of %q: %w", name, d.engineErr(ctx, err))
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
			// The put may have happened before the reply was lost.
			d.abandon(d.track(ls, req.Name, key, 0))
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
		d.abandon(d.track(ls, req.Name, key, 0))
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
		d.abandon(l)
		return nil, driver.Validity{}, err
	}
	return l.held(), ls.validity(), nil
}
