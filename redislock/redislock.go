// Package redislock is the Redis driver of dlock: a lock on a single Redis
// node (or a Redis Cluster / Sentinel client), or a Redlock over several
// independent Redis masters.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	c, err := redislock.New(rdb, dlock.WithTTL(10*time.Second))
//
//	c, err := dlock.Open(ctx, "redis://:password@localhost:6379/0")
//	c, err := dlock.Open(ctx, "redlock://h1:6379,h2:6379,h3:6379")
//
// # Single node
//
// A lock is a few names sharing one hash tag, so that they live in one slot
// of a Redis Cluster: the lock key PREFIX{NAME} holding the owner's random id
// with the TTL, the fence counter PREFIX{NAME}:fence, the release channel
// PREFIX{NAME}:released, the waiter queue PREFIX{NAME}:waiters and the set of
// given-up attempts PREFIX{NAME}:gone. NAME is the lock's name with every
// byte other than letters, digits, '-', '.', '_' and '/' written as %XX, so
// names of any bytes map to distinct keys and cannot break the hash tag. The
// fence counter has no TTL: it must outlive the lock for tokens to keep
// increasing, so it stays behind (a few bytes per lock name ever used); the
// other keys expire.
//
// Taking the lock is one Lua script: if the key is absent it increments the
// fence counter, sets the key and returns the counter as the fencing token;
// otherwise it returns the key's remaining TTL. Renew and release are
// scripts that compare the owner id before PEXPIRE or DEL.
//
// A waiter subscribes to the release channel (all waiters of a client share
// one pub/sub connection) and, once the server has confirmed that, tries
// again; that try, failing, puts it in the waiter queue. A release that
// finds a queued waiter does not free the lock: the same script hands it
// over, taking the next token, setting the key to the waiter's owner id with
// the TTL, and publishing "OWNER TOKEN TTL", so that the waiter holds the
// lock when the message arrives, with no further round trip. The waiter may
// also find the lock already its by its own attempt, before the message
// arrives (a pub/sub connection can lag the command connection): the client
// then remembers that the grant was taken up, so that the late message is
// not taken for a grant to a waiter that gave up, which would be given back.
// A grant message older than the waiter's last look at the lock (its token
// no higher than the fence counter that look saw) is ignored. A waiter that
// gave up releases a grant when the message reaches its client (which passes
// the lock on to the next); one whose process died leaves it to expire after
// the TTL, and its queue entry expires 2 x the longer of its own TTL and the
// holder's remaining TTL, + 1 s, after its last try. A waiter also tries
// again when the holder's key would expire, so a crashed holder is replaced
// at its expiry, not at some poll tick; and a waiter whose subscription
// cannot be made or is not confirmed waits that way too, and subscribes
// again, rather than fail or hang. With nobody queued, a release is a plain
// compare-and-delete that publishes nothing.
//
// An attempt whose reply was lost is given back, and the server then
// refuses that owner's attempts for a while (the :gone set), so that a copy
// arriving late cannot take the lock for nobody.
//
// Fencing tokens come from the node's counter (driver.FencingNode): they
// increase as long as the node keeps its data. A restart without
// persistence, or a failover to a replica that had not yet received the last
// increments (replication is asynchronous), can repeat tokens and can grant
// a lock twice. So can eviction: a node whose maxmemory-policy is allkeys-*
// (any key, the fence counter too, may be evicted) is refused, at Open or
// before the first lock of a client made with New; under volatile-* a lock
// key may be evicted before its TTL (the counter is kept), which
// Capabilities notes, as it notes a policy the server will not show.
//
// # Redlock
//
// With several independent masters (NewRedlock, redlock://) a lock is taken
// on each node in parallel and held if a majority granted it within its
// validity time: TTL minus the time the attempt took minus a drift allowance
// of TTL/100 + 2 ms. Renewal must succeed on a majority; release goes to
// every node. Each attempt writes a key value of its own (the owner id and
// the attempt's number); a failed one gives back what it took on each node
// once that node has answered, and every give-back and release records the
// attempt as over on the node, which then refuses its requests: a request
// that reaches a node late (a straggler) cannot leave a key there that
// nobody will release. A Redlock opened from a URL needs a majority of its
// nodes to answer; the others are named in Capabilities' notes.
//
// Redlock waiters queue on every node under a ticket of their own (the time
// they began to wait), the same on each node, so the nodes' queues agree on
// who is first. A release takes the first waiter out of each node's queue
// and publishes its owner id: one client tries, rather than every waiting
// client at once, which split the vote so that all backed off. The woken
// waiter, if it fails, queues again with its ticket, keeping its place; if
// it gives up it wakes the next in line. A holder's release takes its own
// entries out of every node's queue, so that no stale entry absorbs a
// wake-up. Contenders that split the vote so that each finds most nodes held
// but nobody a majority sleep like waiters, and the give-back of each wakes
// the first in line, so that someone tries as soon as the keys are gone;
// contenders that find most nodes free pause a random moment and try again.
//
// Tokens stay strictly increasing across grants: after locking a majority,
// the client reads the fence counters of the nodes it holds, takes the
// largest plus one, and writes it back to a majority (each node only raises
// its counter) before the grant returns. Any later majority shares a node
// with that one, reads at least that token, and goes higher.
//
// What Redlock assumes, stated plainly (see Martin Kleppmann, "How to do
// distributed locking", 2016, and Salvatore Sanfilippo, "Is Redlock safe?",
// 2016): (1) clocks on the nodes and the client advance at nearly the same
// rate (bounded drift; no large jumps of the nodes' clocks, which Redis uses
// to expire keys); (2) a node that crashes either keeps its data (AOF with
// fsync=always) or stays down for at least a TTL before rejoining empty:
// a node that returns at once with no data lets a second client form a
// majority while the first still holds one in its own view; (3) a client
// paused longer than the validity time (GC, swapping) may act after its
// lock expired. Kleppmann's point stands: Redlock's safety rests on timing,
// so protect the resource with the fencing token, which this driver makes
// strictly increasing under assumption (2). The portable layer gives a
// lease up on the client's monotonic clock before the nodes could expire it,
// which addresses the client-side half of (3) but not a pause of the whole
// process.
//
// # Errors, contexts and logging
//
// Errors that may pass (a refused, reset or timed-out connection, a pool
// timeout, LOADING, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, BUSY, OOM,
// a Redlock majority out of reach) match driver.ErrUnavailable, so that a
// blocking Lock rides them out; WRONGTYPE, a key without TTL, a refused
// password and a go-redis client closed by its owner do not.
//
// Every request ends by its context's deadline, also on a go-redis client
// without ContextTimeoutEnabled: when the deadline is shorter than the
// client's own read and write timeouts, the driver stops waiting for the
// request at the deadline (a goroutine waits it out). Clients with
// ContextTimeoutEnabled (those made from URLs) need nothing of the kind. As
// in go-redis, a request is not abandoned on a cancellation without
// deadline.
//
// Clients made from a URL never write to go-redis's process-wide logger:
// their failed dials come back as errors only. Clients passed to New or
// NewRedlock log as their owner configured go-redis (redis.SetLogger).
package redislock

import (
	"context"
	"crypto/rand"
	_ "embed"
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

var (
	//go:embed acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(acquireLua)
	//go:embed lock.lua
	lockLua    string
	lockScript = redis.NewScript(lockLua)
	//go:embed fence.lua
	fenceLua    string
	fenceScript = redis.NewScript(fenceLua)
	//go:embed renew.lua
	renewLua    string
	renewScript = redis.NewScript(renewLua)
	//go:embed release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
	//go:embed rlrelease.lua
	rlReleaseLua    string
	rlReleaseScript = redis.NewScript(rlReleaseLua)
	//go:embed dequeue.lua
	dequeueLua    string
	dequeueScript = redis.NewScript(dequeueLua)
	//go:embed status.lua
	statusLua    string
	statusScript = redis.NewScript(statusLua)
)

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

type node struct {
	rdb  redis.UniversalClient
	name string // for errors: the address, when known
	hub  *hub
	// aware: rdb bounds its requests by their context's deadline
	// (ContextTimeoutEnabled); otherwise run does.
	aware    bool
	timeouts time.Duration // the client's own bound on a request, 0 if none (clientTimeouts)
	bg       *sync.WaitGroup
	eviction evictionCheck
}

// run runs script on the node and returns when it answers or ctx's
// deadline passes, whichever comes first, even with a client that ignores
// contexts (go-redis without ContextTimeoutEnabled waits out its own read
// and write timeouts): the portable layer bounds Unlock and Close by the
// deadline of the context it passes. A request cut short this way may still
// reach the server; every caller copes with that (owner-checked scripts,
// refused late attempts). Like go-redis, run does not abandon a request on
// a mere cancellation.
func (n *node) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return await(ctx, n, func() *redis.Cmd { return script.Run(ctx, n.rdb, keys, args...) }, redis.NewCmd)
}

// await runs do, a request to n, bounded by ctx's deadline as run says;
// empty makes the command that carries the deadline's error.
func await[C redis.Cmder](ctx context.Context, n *node, do func() C, empty func(context.Context, ...any) C) C {
	dl, ok := ctx.Deadline()
	if !ok || n.aware || n.timeouts > 0 && n.timeouts <= time.Until(dl)+timeoutSlack {
		// No deadline, or one the client keeps by itself.
		return do()
	}
	// The client would wait longer than the deadline allows: wait for it
	// in a goroutine. (Only for deadlines shorter than the client's own
	// timeouts, e.g. the Unlock of a lock whose TTL is shorter: a
	// goroutine per request costs more than the request on a loaded
	// machine. go-redis's WithTimeout clone would be cheaper, but drops
	// the hooks the application added to its client.)
	done := make(chan C, 1)
	n.bg.Go(func() { done <- do() })
	select {
	case c := <-done:
		return c
	case <-ctx.Done():
		c := empty(ctx)
		c.SetErr(ctx.Err())
		return c
	}
}

// timeoutSlack is how far past a deadline a client's own timeout may end a
// request for the deadline to count as kept.
const timeoutSlack = 100 * time.Millisecond

// clientTimeouts returns the longest a request on c waits on its socket
// (the larger of its read and write timeouts), 0 if unbounded or unknown.
func clientTimeouts(c redis.UniversalClient) time.Duration {
	var r, w time.Duration
	switch c := c.(type) {
	case *redis.Client:
		r, w = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.ClusterClient:
		r, w = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.Ring:
		r, w = c.Options().ReadTimeout, c.Options().WriteTimeout
	}
	if r <= 0 || w <= 0 {
		return 0
	}
	return max(r, w)
}

// honoursContext reports whether c bounds requests by their context.
func honoursContext(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
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

// keys are the Redis names of one lock.
type keys struct {
	lock, fence, channel, queue, alive, gone string
}

// keysOf makes all six names as slices of one string: one allocation per
// Acquire instead of six, on a path whose cost is measured in allocations.
func (d *Driver) keysOf(name string) keys {
	tag := d.prefix + "{" + escape(name) + "}"
	const fence, released, waiters, alive, gone = ":fence", ":released", ":waiters", ":alive", ":gone"
	var b strings.Builder
	b.Grow(5*len(tag) + len(fence) + len(released) + len(waiters) + len(alive) + len(gone))
	for _, suffix := range []string{fence, released, waiters, alive, gone} {
		b.WriteString(tag)
		b.WriteString(suffix)
	}
	all := b.String()
	k := keys{lock: tag}
	i := 0
	for _, f := range []struct {
		dst *string
		n   int
	}{{&k.fence, len(fence)}, {&k.channel, len(released)}, {&k.queue, len(waiters)}, {&k.alive, len(alive)}, {&k.gone, len(gone)}} {
		*f.dst = all[i : i+len(tag)+f.n]
		i += len(tag) + f.n
	}
	return k
}

// escape writes name with every byte outside [A-Za-z0-9._/-] as %XX: a
// bijection, and '{' and '}' never appear.
func escape(name string) string {
	n := 0
	for i := 0; i < len(name); i++ {
		if !plain(name[i]) {
			n++
		}
	}
	if n == 0 {
		return name
	}
	const hexd = "0123456789ABCDEF"
	b := make([]byte, 0, len(name)+2*n)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if plain(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexd[c>>4], hexd[c&15])
		}
	}
	return string(b)
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '/'
}

// owner returns an id no other acquisition, here or in any other process,
// uses.
func (d *Driver) owner() string {
	var b [64]byte
	return string(strconv.AppendUint(append(append(b[:0], d.id...), '.'), d.seq.Add(1), 36))
}

func ttlMillis(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }

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
