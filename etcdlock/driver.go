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

// grantTimeout bounds a lease grant. clientv3 retries a grant on its own
// while the cluster cannot answer, so without a bound of ours a grant fails
// only when the caller's context ends, and never says why.
const grantTimeout = 5 * time.Second

// closeTimeout bounds Close's lease revocations, made all at once. A
// revocation only frees keys before their TTL: the portable layer has
// released what it held before Close, with a bound of its own, and
// dlock.Client.Close's bound is the sum of the two.
const closeTimeout = time.Second

// Options configure a driver. The zero value (or a nil *Options) means the
// documented defaults.
type Options struct {
	// Prefix is prepended, with a "/", to every key (DefaultPrefix if
	// empty; a trailing "/" is dropped). Clients that contend for the same
	// locks must use the same prefix.
	Prefix string
}

// New returns a dlock client whose locks live in etcd, configured by o (nil
// for the defaults) and opts. It uses cli but does not own it: closing the
// dlock client leaves cli open.
func New(cli *clientv3.Client, o *Options, opts ...dlock.Option) (*dlock.Client, error) {
	if cli == nil {
		return nil, nilClient("etcdlock.New")
	}
	return dlock.NewClient(newDriver(cli, o, false), opts...)
}

// NewDriver returns the etcd driver itself, configured by o (nil for the
// defaults), for dlock.NewClient or a wrapper of the driver. It uses cli but
// does not own it: closing the driver leaves cli open.
func NewDriver(cli *clientv3.Client, o *Options) (*Driver, error) {
	if cli == nil {
		return nil, nilClient("etcdlock.NewDriver")
	}
	return newDriver(cli, o, false), nil
}

func nilClient(fn string) error {
	return driver.InvalidArgument(fn+": cli", "<nil>", "a *clientv3.Client")
}

// Driver is the etcd driver: one etcd client, the leases it keeps and the
// locks and waiters on them. Its methods are called by the portable layer
// (dlock.Client), not by applications.
type Driver struct {
	cli  *clientv3.Client
	owns bool   // close cli on Close (made by the URL opener)
	root string // Prefix + "/"
	seq  atomic.Uint64

	closeCtx context.Context // cancelled by Close: stops watches and keep-alives
	closeFn  context.CancelFunc
	grant    chan struct{} // one lease grant at a time

	mu        sync.Mutex
	closed    bool
	leases    map[int64]*lease    // the lease new keys go on, by TTL asked for, in seconds
	all       map[*lease]struct{} // every lease granted and not known dead: Close revokes them
	watching  bool                // the loss watch is running (loss.go)
	orphans   map[*lock]struct{}  // keys to delete in the background (orphans.go)
	reaping   bool                // the goroutine deleting orphans is running
	connWatch bool                // the goroutine telling of the connection runs (conn.go)
	kick      chan struct{}       // wakes it early
	wg        sync.WaitGroup      // every goroutine the driver starts; Close waits for them

	checks, deletes *batcher // owner checks and owner-checked deletes in bulk (batch.go)

	// The loss watch's state (loss.go).
	wmu       sync.Mutex
	keys      map[string]*lock // every key of a live waiter or holder, from just before its creation
	from      int64            // the loss watch reports every delete after this revision; 0: no watch
	unchecked []*lock          // keys to owner-check once the watch exists
	wkick     chan struct{}    // wakes the watch to check them
	watched   chan struct{}    // closed when the first loss watch exists (for tests)
}

// The portable layer probes for Capable, Inspector and AsyncRenewer; a
// driver that lost one of them would silently lose Client.Capabilities or
// Client.Status, or spend a goroutine per lock on every renewal.
var (
	_ driver.Driver    = (*Driver)(nil)
	_ driver.Capable   = (*Driver)(nil)
	_ driver.Inspector = (*Driver)(nil)
	_ driver.Lock      = (*lock)(nil)

	_ driver.AsyncRenewer = (*lock)(nil)

	_ driver.RenewCoalescer = (*Driver)(nil)
)

func newDriver(cli *clientv3.Client, o *Options, owns bool) *Driver {
	if o == nil {
		o = &Options{}
	}
	p := strings.TrimSuffix(o.Prefix, "/")
	if p == "" {
		p = DefaultPrefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		cli: cli, owns: owns, root: p + "/",
		closeCtx: ctx, closeFn: cancel,
		grant:   make(chan struct{}, 1),
		leases:  map[int64]*lease{},
		all:     map[*lease]struct{}{},
		orphans: map[*lock]struct{}{},
		kick:    make(chan struct{}, 1),
		keys:    map[string]*lock{},
		wkick:   make(chan struct{}, 1),
		watched: make(chan struct{}),
	}
	d.checks, d.deletes = newBatcher(d, false), newBatcher(d, true)
	return d
}

// CoalescesRenewals reports true (driver.RenewCoalescer): the renewals in
// flight together share one keep-alive of their lease and their owner
// checks go in few transactions (batch.go), so the portable layer schedules
// them together.
func (d *Driver) CoalescesRenewals() bool { return true }

// Client returns the etcd client the driver uses: the one given to New or
// NewDriver, or the one the URL opener made from an etcd:// or etcds:// URL
// (TLS and credentials included), which the driver closes on Close. It lets
// a program keep its own data in the same cluster on the same connection
// (`dlock demo` keeps its counter there). Do not close it.
func (d *Driver) Client() *clientv3.Client { return d.cli }

// Capabilities describes what the engine guarantees (driver.Capable).
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingStrong,
		FIFO:    true,
		Scope:   "cluster",
		// Readers and permits are keys of the same queue (keys.go).
		Shared:    true,
		Semaphore: true,
		// A leader's value is its writer key's (election.go).
		Election: true,
		Notes: "tokens are etcd create revisions (linearizable, survive leader failover); " +
			"lease TTLs are whole seconds, at least the server minimum (1.5 x election timeout); " +
			"a leader change extends leases, never shortens them",
	}
}

// Close stops every goroutine of the driver, then revokes its leases, which
// deletes at once whatever keys are left on them, and closes the etcd
// client if the driver made it (dlock.Open). It returns within
// closeTimeout whatever etcd does, plus the client's closing; a lease it
// could not revoke expires within its TTL, since nothing renews it any
// more, and Close says so. A second Close returns an error matching
// driver.ErrClosed.
func (d *Driver) Close() error {
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
func (d *Driver) revoke(leases []*lease) error {
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

// Status reports the holders of name (driver.Inspector): its oldest key,
// with the readers right behind it if it is a reader's, or its first n
// keys if they are permits of n; the newest holder's create revision as
// the token; the oldest key's lease's time to live, in whole seconds; and
// the other keys of the name as waiters.
func (d *Driver) Status(ctx context.Context, name string) (driver.Status, error) {
	if d.cli.Ctx().Err() != nil {
		return driver.Status{}, fmt.Errorf("etcdlock: status of %q: %w", name, errClientClosed)
	}
	pfx := d.namePrefix(name)
	// Not WithKeysOnly: etcd 3.7 answers it from its index, without the
	// keys' leases (the values are empty anyway).
	resp, err := d.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return driver.Status{}, fmt.Errorf("etcdlock: status of %q: %w", name, d.engineErr(ctx, err))
	}
	return d.statusOf(ctx, pfx, resp.Kvs), nil
}

// statusOf is the status of the name whose key range is pfx, from its keys
// in create-revision order.
func (d *Driver) statusOf(ctx context.Context, pfx string, kvs []*mvccpb.KeyValue) driver.Status {
	if len(kvs) == 0 {
		return driver.Status{Waiters: 0}
	}
	st := driver.Status{Held: true, Mode: driver.Exclusive, Holders: 1}
	first := string(kvs[0].Key)
	switch n := keyLimit(pfx, first); {
	case n > 0:
		st.Limit, st.Holders = n, min(n, len(kvs))
	case isReader(pfx, first):
		st.Mode, st.Holders = driver.Shared, len(kvs)
		for i, kv := range kvs {
			if !isReader(pfx, string(kv.Key)) {
				st.Holders = i
				break
			}
		}
	}
	st.Token = uint64(kvs[st.Holders-1].CreateRevision)
	st.Waiters = len(kvs) - st.Holders
	if lid := kvs[0].Lease; lid != 0 {
		if ttl, err := d.cli.TimeToLive(ctx, clientv3.LeaseID(lid)); err == nil && ttl.TTL > 0 {
			st.TTLLeft = time.Duration(ttl.TTL) * time.Second
		}
	}
	return st
}
