package redislock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
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

// Options tunes a Driver. The zero value means the documented defaults.
type Options struct {
	// Prefix starts every key and channel name (default DefaultPrefix). It
	// must not contain '{' or '}', which would change the hash tag.
	Prefix string
}

// New returns a client that keeps its locks on one Redis server, or on a
// Redis Cluster or Sentinel-managed master through rdb. The client does not
// close rdb.
func New(rdb redis.UniversalClient, opts ...dlock.Option) (*dlock.Client, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: redislock.New: rdb = nil: want a go-redis client", dlock.ErrInvalidArgument)
	}
	d, err := NewDriver([]redis.UniversalClient{rdb}, Options{})
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// NewRedlock returns a client that keeps its locks on a majority of the
// independent Redis masters nodes (Redlock; read the package documentation
// for what that assumes). Use an odd number of nodes, at least 3. The
// client does not close the nodes' clients.
func NewRedlock(nodes []redis.UniversalClient, opts ...dlock.Option) (*dlock.Client, error) {
	if len(nodes) < 2 {
		return nil, fmt.Errorf("%w: redislock.NewRedlock: %d nodes: want at least 3 independent masters (use New for one)",
			dlock.ErrInvalidArgument, len(nodes))
	}
	d, err := NewDriver(nodes, Options{})
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// NewDriver returns the driver behind New (one node) and NewRedlock
// (several), for use with dlock.NewClient when Options are needed. The
// driver does not close the clients.
func NewDriver(nodes []redis.UniversalClient, o Options) (*Driver, error) {
	return newDriver(nodes, o, false)
}

// Driver is the redislock driver.Driver. Applications use it through a
// *dlock.Client.
type Driver struct {
	nodes  []*node
	quorum int
	prefix string
	owned  bool // close the clients on Close (opened from a URL)
	id     string
	seq    atomic.Uint64
	closed atomic.Bool
	bg     sync.WaitGroup // give-backs and stragglers running after their call returned
	// checked: every node's eviction policy has been checked (eviction.go).
	checked atomic.Bool
	// missing: nodes that did not answer when the driver was opened from a
	// URL (a Redlock opens with a majority).
	missing []string
}

var (
	_ driver.Driver    = (*Driver)(nil)
	_ driver.Capable   = (*Driver)(nil)
	_ driver.Inspector = (*Driver)(nil)
	_ driver.Lock      = (*lock)(nil)
)

func newDriver(clients []redis.UniversalClient, o Options, owned bool) (*Driver, error) {
	if len(clients) == 0 {
		return nil, fmt.Errorf("%w: redislock: no Redis clients: want one, or several for Redlock", dlock.ErrInvalidArgument)
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	var b [12]byte
	rand.Read(b[:])
	d := &Driver{quorum: len(clients)/2 + 1, prefix: prefix, owned: owned, id: hex.EncodeToString(b[:])}
	for i, c := range clients {
		if c == nil {
			return nil, fmt.Errorf("%w: redislock: client %d is nil", dlock.ErrInvalidArgument, i)
		}
		d.nodes = append(d.nodes, &node{rdb: c, name: nodeName(c, i), hub: newHub(c, d.id+".", len(clients) > 1, &d.bg),
			aware: honoursContext(c), timeouts: clientTimeouts(c), bg: &d.bg})
	}
	return d, nil
}

func checkPrefix(prefix string) error {
	if strings.ContainsAny(prefix, "{}") {
		return fmt.Errorf("%w: redislock: prefix %q: want no '{' or '}' (they would change the hash tag)",
			dlock.ErrInvalidArgument, prefix)
	}
	return nil
}

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
	notes := []string{"single Redis node (or one Cluster slot / Sentinel master): tokens come from a counter on the node; " +
		"a restart without persistence or a failover to a replica behind on asynchronous replication can repeat " +
		"tokens and grant a lock twice; an eviction policy other than noeviction can drop lock keys " +
		"(allkeys-* is refused: it can drop the counter too)"}
	if len(d.nodes) > 1 {
		notes = []string{fmt.Sprintf("Redlock over %d independent masters, majority %d: assumes bounded clock drift "+
			"(allowance TTL/100+2ms) and that a crashed node keeps its data (AOF fsync=always) or stays down "+
			"for a TTL before rejoining empty; tokens are written back to a majority before each grant so they "+
			"strictly increase under that assumption. Safety rests on timing (Kleppmann, \"How to do distributed "+
			"locking\"; Sanfilippo, \"Is Redlock safe?\"): use the fencing token; an eviction policy other than "+
			"noeviction can drop lock keys (allkeys-* is refused)", len(d.nodes), d.quorum)}
	}
	if len(d.missing) > 0 {
		notes = append(notes, fmt.Sprintf("unreachable when opened: %s (locks need %d of the %d nodes)",
			strings.Join(d.missing, "; "), d.quorum, len(d.nodes)))
	}
	notes = append(notes, d.evictionNotes()...)
	return driver.Capabilities{Fencing: driver.FencingNode, Scope: "cluster", Notes: strings.Join(notes, ". ")}
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
	k := d.keysOf(name)
	deadlines := k.queue
	if len(d.nodes) > 1 {
		deadlines = k.alive
	}
	type reply struct {
		pttl, fence, waiters int64
		err                  error
	}
	rs := make([]reply, len(d.nodes))
	fanOut(len(d.nodes), func(i int) {
		v, err := d.nodes[i].run(ctx, statusScript, []string{k.lock, k.fence, deadlines}).Int64Slice()
		if err == nil && len(v) != 3 {
			err = fmt.Errorf("unexpected reply %v", v)
		}
		if err != nil {
			rs[i].err = d.nodes[i].errorf(k.lock, err)
			return
		}
		rs[i].pttl, rs[i].fence, rs[i].waiters = v[0], v[1], v[2]
	})
	var st driver.Status
	var ttls []int64
	var errs []error
	for _, r := range rs {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		st.Waiters = max(st.Waiters, int(r.waiters))
		st.Token = max(st.Token, uint64(r.fence))
		if r.pttl > 0 {
			ttls = append(ttls, r.pttl)
		}
	}
	if len(errs) > len(d.nodes)-d.quorum {
		if len(d.nodes) == 1 {
			return driver.Status{}, errs[0]
		}
		return driver.Status{}, d.quorumError(fmt.Sprintf("status read from %d of %d nodes", len(d.nodes)-len(errs), len(d.nodes)), errs)
	}
	if len(ttls) >= d.quorum {
		st.Held = true
		// The lock is held while a majority keeps it: until the
		// quorum-th longest TTL runs out.
		sortDesc(ttls)
		st.TTLLeft = time.Duration(ttls[d.quorum-1]) * time.Millisecond
	} else {
		st.Token = 0
	}
	return st, nil
}

func sortDesc(s []int64) { slices.SortFunc(s, func(a, b int64) int { return int(b - a) }) }
