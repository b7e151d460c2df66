package redislock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// DefaultPrefix starts every key and channel this driver makes.
const DefaultPrefix = "dlock:"

// Options tunes a Driver. The zero value, like a nil *Options, means the
// documented defaults.
type Options struct {
	// Prefix starts every key and channel name (default DefaultPrefix). It
	// must not contain '{' or '}', which would change the hash tag.
	Prefix string
	// Fairness is how a release on a single node passes the lock to its
	// waiters (fairness.go): DefaultFairness, FIFO or Barging. Redlock
	// ignores it: its releases free the lock and wake the first waiter.
	Fairness Fairness
	// StarvationBound is, with Barging, how long the first waiter may wait
	// before a release hands it the lock (default DefaultStarvationBound);
	// FIFO ignores it. It must not be negative.
	StarvationBound time.Duration
}

// New returns a client that keeps its locks on one Redis server, or on a
// Redis Cluster or Sentinel-managed master through rdb. o may be nil. The
// client does not close rdb.
func New(rdb redis.UniversalClient, o *Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := newSingle("redislock.New", rdb, o, false)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// NewRedlock returns a client that keeps its locks on a majority of the
// independent Redis masters nodes (Redlock; read the package documentation
// for what that assumes). o may be nil. Use an odd number of nodes, 3 or
// more: two work, but their majority is both, so neither may fail;
// NewRedlock refuses fewer than two. The client does not close the nodes'
// clients.
func NewRedlock(nodes []redis.UniversalClient, o *Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := newRedlock("redislock.NewRedlock", nodes, o, false, nil)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// NewDriver returns the driver behind New, for dlock.NewClient. The driver
// does not close rdb.
func NewDriver(rdb redis.UniversalClient, o *Options) (*Driver, error) {
	return newSingle("redislock.NewDriver", rdb, o, false)
}

// NewRedlockDriver returns the driver behind NewRedlock, for
// dlock.NewClient. The driver does not close the nodes' clients.
func NewRedlockDriver(nodes []redis.UniversalClient, o *Options) (*Driver, error) {
	return newRedlock("redislock.NewRedlockDriver", nodes, o, false, nil)
}

// Driver is the redislock driver.Driver. Applications use it through a
// *dlock.Client.
type Driver struct {
	// topo is a single node (lock.go) or a Redlock (redlock.go): how a lock
	// is tried, held, given back and read.
	topo   topology
	nodes  []*node // every node, for what is the same on each (Close, checks, the waiters' hubs)
	prefix string
	owned  bool // close the clients on Close (opened from a URL)
	id     string
	seq    atomic.Uint64
	closed atomic.Bool
	done   chan struct{}  // closed by Close: observers end
	bg     sync.WaitGroup // give-backs, stragglers and observers running after their call returned
	// checked: every node's eviction policy has been checked (eviction.go).
	checked atomic.Bool
	// barge is a single node's barging bound in microseconds, which its
	// writers' owner ids carry (owner), 0 for strict hand-over
	// (Options.Fairness).
	barge int64
}

// topology is what differs between a single node and a Redlock. Each has
// an implementation of its own, so that no code asks how many nodes there
// are.
type topology interface {
	// newLock starts one acquisition of req (which check has accepted):
	// its attempts, then the lock it holds.
	newLock(k keys, owner string, req driver.Request) candidate
	// primitives says what the topology grants besides a mutex.
	primitives() (shared, semaphore, election bool)
	// kind names the topology in errors.
	kind() string
	status(ctx context.Context, k keys) (driver.Status, error)
	// notes says what the topology assumes, for Capabilities.
	notes() []string
}

// The root probes a driver for Capable (Client.Capabilities) and Inspector
// (Client.Status); these lines keep them from going missing unnoticed.
var (
	_ driver.Driver    = (*Driver)(nil)
	_ driver.Capable   = (*Driver)(nil)
	_ driver.Inspector = (*Driver)(nil)
)

// newSingle makes a driver on one node; fn names the caller in errors.
func newSingle(fn string, c redis.UniversalClient, o *Options, owned bool) (*Driver, error) {
	if c == nil {
		return nil, driver.InvalidArgument(fn+": rdb", nil, "a go-redis client")
	}
	d, err := newDriver(fn, []redis.UniversalClient{c}, o, owned, false)
	if err != nil {
		return nil, err
	}
	d.topo = &single{d: d, n: d.nodes[0]}
	return d, nil
}

// newRedlock makes a Redlock driver; missing are the nodes that did not
// answer when it was opened from a URL.
func newRedlock(fn string, clients []redis.UniversalClient, o *Options, owned bool, missing []string) (*Driver, error) {
	if len(clients) < 2 {
		return nil, driver.InvalidArgument(fn+": nodes", fmt.Sprintf("%d clients", len(clients)),
			"at least 2 independent masters, better an odd number from 3 up (New for one)")
	}
	for i, c := range clients {
		if c == nil {
			return nil, driver.InvalidArgument(fmt.Sprintf("%s: nodes[%d]", fn, i), nil, "a go-redis client")
		}
	}
	// named: every node names the same waiter (hub.go).
	d, err := newDriver(fn, clients, o, owned, true)
	if err != nil {
		return nil, err
	}
	d.barge = 0 // Options.Fairness is a single node's
	d.topo = &redlock{d: d, nodes: d.nodes, quorum: majority(len(d.nodes)), missing: missing}
	return d, nil
}

// newDriver makes what both topologies share; named is the hubs' (hub.go).
func newDriver(fn string, clients []redis.UniversalClient, o *Options, owned, named bool) (*Driver, error) {
	var opt Options
	if o != nil {
		opt = *o
	}
	if err := checkPrefix(fn+": Options.Prefix", opt.Prefix); err != nil {
		return nil, err
	}
	if opt.Prefix == "" {
		opt.Prefix = DefaultPrefix
	}
	barge, err := bargeBound(fn, opt.Fairness, opt.StarvationBound)
	if err != nil {
		return nil, err
	}
	var b [12]byte
	rand.Read(b[:])
	d := &Driver{prefix: opt.Prefix, owned: owned, id: hex.EncodeToString(b[:]), done: make(chan struct{}), barge: barge}
	for i, c := range clients {
		n := &node{rdb: c, name: nodeName(c, i), hub: newHub(c, d.id+".", named, &d.bg),
			aware: honoursContext(c), timeouts: clientTimeouts(c), bg: &d.bg, done: d.done}
		n.batch = newBatcher(n, runRenewals)
		n.releases = newBatcher(n, runReleases)
		d.nodes = append(d.nodes, n)
	}
	return d, nil
}

// checkPrefix refuses a prefix that would change the hash tag; arg names
// where it came from.
func checkPrefix(arg, prefix string) error {
	if strings.ContainsAny(prefix, "{}") {
		return driver.InvalidArgument(arg, strconv.Quote(prefix), "no '{' or '}' (they would change the hash tag)")
	}
	return nil
}

// nodeName names node i in errors and notes: its address when known.
func nodeName(c redis.UniversalClient, i int) string {
	if cl, ok := c.(*redis.Client); ok {
		return cl.Options().Addr
	}
	return "node " + strconv.Itoa(i)
}

// background runs fn, a bounded request whose outcome its caller does not
// wait for; Close waits for it a moment.
func (d *Driver) background(fn func()) { d.bg.Go(fn) }

// closeWait bounds how long Close waits for background requests. Each is
// bounded by its own timeout, or by the read timeout of a client that
// ignores contexts; closing the clients (opened from a URL) ends them at
// once.
const closeWait = time.Second

// Close implements driver.Driver.
func (d *Driver) Close() error {
	if d.closed.Swap(true) {
		return driver.ErrClosed
	}
	close(d.done)
	var errs []error
	for _, n := range d.nodes {
		if err := n.hub.close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if d.owned {
		for _, n := range d.nodes {
			if err := n.rdb.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	idle := make(chan struct{})
	go func() {
		d.bg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-time.After(closeWait):
	}
	return errors.Join(errs...)
}

// Capabilities implements driver.Capable. Notes also say what the checks
// of the nodes found: an eviction policy that weakens locks, one that could
// not be read, nodes unreachable when the driver was opened.
func (d *Driver) Capabilities() driver.Capabilities {
	notes := append(d.topo.notes(), d.evictionNotes()...)
	shared, semaphore, election := d.topo.primitives()
	return driver.Capabilities{Fencing: driver.FencingNode, Scope: "cluster", Notes: strings.Join(notes, ". "),
		Shared: shared, Semaphore: semaphore, Election: election}
}

// Status implements driver.Inspector. Waiters counts the queued waiters
// that are still trying (with Redlock, the most any answering node has
// queued); a waiter woken by a release and trying at that moment is not
// queued, and one that has just begun to wait is queued only once it has
// subscribed and looked again.
func (d *Driver) Status(ctx context.Context, name string) (driver.Status, error) {
	if d.closed.Load() {
		return driver.Status{}, driver.ErrClosed
	}
	return d.topo.status(ctx, d.keysOf(name))
}
