package zklock

import (
	"context"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// DefaultPrefix is the znode under which lock queues live by default.
const DefaultPrefix = "/dlock"

// maxSessions bounds the sessions of a driver that follows the TTL: one per
// distinct TTL asked.
const maxSessions = 8

// Options configure the driver. The zero value, like a nil *Options, means
// the defaults.
type Options struct {
	// Prefix is the znode path under which the lock queues live
	// (DefaultPrefix): an absolute, clean path other than "/", created if
	// missing. zk:// sets it from the URL's path.
	Prefix string
	// SessionTimeout is the session timeout asked of the server.
	//
	// With Dial (and zk://), zero (the default) means: follow the TTL.
	// Each lock lives in a session whose timeout is the TTL it was asked
	// with (dlock.WithTTL, on the client or on the mutex); the driver opens
	// one session per distinct TTL, on first use, up to 8. A value > 0
	// makes one session with that timeout for every lock, whatever their
	// TTL.
	//
	// With New and NewDriver it is required and must be the value given to
	// zk.Connect.
	//
	// Either way the server may grant another timeout (it clamps the asked
	// one to its [minSessionTimeout, maxSessionTimeout], 2 and 20 ticks by
	// default); the driver uses the one granted, and Capabilities says so
	// when it differs.
	SessionTimeout time.Duration
	// Auth is "user:password" for ZooKeeper digest authentication; Dial
	// adds it to its connections (New's connection is yours to
	// authenticate). It is never logged.
	Auth string
	// ACL of the nodes the driver creates: by default open to all, or, with
	// Dial and Auth set, to the authenticated user alone.
	ACL []zk.ACL
	// Dialer replaces net.DialTimeout for Dial's connections, and for the
	// probe by which New and NewDriver learn the session timeout the server
	// grants.
	Dialer zk.Dialer
}

// New returns a client whose locks live on conn's session. events must be
// the channel zk.Connect returned with conn (or nil if the events reach the
// driver some other way, which loses prompt loss detection on session
// expiry, and the notice that the owner closed conn, and costs a goroutine
// per held lock): the driver reads it until it is closed or the client is
// closed. o.SessionTimeout must be the
// timeout given to zk.Connect.
//
// go-zookeeper does not tell which session timeout the server granted, so
// the driver learns it with a probe: a session of its own with the server
// conn uses, asked for o.SessionTimeout and closed at once; again when conn
// moves to another server. Locks are granted once it is known. The probe
// dials with o.Dialer (net.DialTimeout if nil).
//
// Closing the client leaves conn open.
func New(conn *zk.Conn, events <-chan zk.Event, o *Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := newBorrowed("zklock.New", conn, events, o.value())
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// NewDriver is New's driver, for dlock.NewClient.
func NewDriver(conn *zk.Conn, events <-chan zk.Event, o *Options) (*Driver, error) {
	return newBorrowed("zklock.NewDriver", conn, events, o.value())
}

// value returns the options o points to, or the defaults for nil; the
// driver keeps a copy.
func (o *Options) value() Options {
	if o == nil {
		return Options{}
	}
	return *o
}

// newBorrowed makes the driver of New and NewDriver (named fn, for errors).
func newBorrowed(fn string, conn *zk.Conn, events <-chan zk.Event, o Options) (*Driver, error) {
	if conn == nil {
		return nil, driver.InvalidArgument(fn+": conn", "<nil>", "a *zk.Conn")
	}
	if o.SessionTimeout <= 0 {
		return nil, driver.InvalidArgument(fn+": Options.SessionTimeout", o.SessionTimeout, "the session timeout given to zk.Connect")
	}
	d, err := newDriver(o)
	if err != nil {
		return nil, err
	}
	d.grant.probeDialer = o.Dialer
	if d.grant.probeDialer == nil {
		d.grant.probeDialer = net.DialTimeout
	}
	d.conn = conn
	d.connP.Store(conn)
	d.bind(conn.SessionID())
	if events != nil {
		d.nodeEvents = true
		d.bg.Add(1)
		go d.drain(events)
	}
	d.startHeartbeat(time.Time{})
	d.probeAfterConnect()
	return d, nil
}

// Dial connects to the ZooKeeper servers (host:port each) and returns a
// client that owns its connections: closing the client ends its sessions.
// It waits until a session is established or ctx is done.
//
// With o.SessionTimeout zero each lock's TTL is its session timeout (see
// Options); Dial then opens the first session with dlock.DefaultTTL, the
// TTL of a client given none, and closes it unused once a lock asks for
// another TTL.
func Dial(ctx context.Context, servers []string, o *Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := dialAny(ctx, servers, o.value())
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// dialAny makes the driver for Dial and the zk:// URL: one session with the
// given timeout, or sessions that follow the TTL.
func dialAny(ctx context.Context, servers []string, o Options) (driver.Driver, error) {
	if len(servers) == 0 {
		return nil, driver.InvalidArgument("zklock.Dial: servers", "[]", "at least one host:port")
	}
	for i, s := range servers {
		if strings.TrimSpace(s) == "" {
			return nil, driver.InvalidArgument(fmt.Sprintf("zklock.Dial: servers[%d]", i), strconv.Quote(s), "host:port")
		}
	}
	if o.SessionTimeout < 0 {
		return nil, driver.InvalidArgument("zklock.Dial: Options.SessionTimeout", o.SessionTimeout, "0 (follow the TTL) or a duration > 0")
	}
	if o.SessionTimeout > 0 {
		return dialDriver(ctx, servers, o, false)
	}
	return dialPerTTL(ctx, servers, o)
}

// dialDriver makes a driver on one session, asking o.SessionTimeout. It
// waits for the session until ctx is done or, with failFast, until every
// server has been tried once.
func dialDriver(ctx context.Context, servers []string, o Options, failFast bool) (*Driver, error) {
	if o.Auth != "" && len(o.ACL) == 0 {
		o.ACL = zk.AuthACL(zk.PermAll)
	}
	d, err := newDriver(o)
	if err != nil {
		return nil, err
	}
	d.owned = true // before onEvent can run
	d.nodeEvents = true
	d.nservers = len(servers)
	dialer := o.Dialer
	if dialer == nil {
		dialer = net.DialTimeout
	}
	asked := time.Now()
	conn, _, err := zk.Connect(servers, o.SessionTimeout,
		zk.WithLogger(quiet{}), zk.WithLogInfo(false),
		zk.WithEventCallback(d.onEvent), zk.WithDialer(grantDialer(dialer, d.setGranted)),
		zk.WithHostProvider(newBlipHostProvider()))
	if err != nil {
		return nil, fmt.Errorf("zklock: connect: %w", err)
	}
	d.conn = conn
	d.connP.Store(conn)
	if err := d.awaitSession(ctx, failFast); err != nil {
		d.Close()
		return nil, err
	}
	if o.Auth != "" {
		if _, err := call(ctx, d, func() (struct{}, error) { return struct{}{}, conn.AddAuth("digest", []byte(o.Auth)) }); err != nil {
			d.Close()
			return nil, fmt.Errorf("zklock: digest authentication: %w", err)
		}
	}
	d.startHeartbeat(asked)
	return d, nil
}

// testHooks is the package's test seam: it hears of events that change no
// outcome and that no caller can observe, which the tests and benchmarks
// count (hooks_test.go). Its fields are nil but in the package's tests,
// which set them before any driver runs.
var testHooks struct {
	// A create whose reply was lost was found again by its guid.
	recovered func()
	// The queue listing overtook the create (the send order of two
	// goroutines is not guaranteed), which costs one more read.
	pipelineMiss func()
	// A grant on the sole predecessor's deletion, with no read of the queue.
	readlessGrant func()
	// A grant on the create's reply alone: our node its queue's only one.
	aloneGrant func()
	// A round of renewals (or releases) was sent for this many nodes
	// (batch.go).
	round func(renewal bool, nodes int)
	// A check of a node (a grant's proof) is about to be sent (quorum.go).
	checkSent func()
	// A waiter in parent has armed its watches on the nodes ahead and
	// waits; last: the deletion of any one of them lets it in (wait.go).
	waiting func(parent string, last bool)
}

func hook(f func()) {
	if f != nil {
		f()
	}
}

// Driver is the driver of one ZooKeeper session: New's and NewDriver's, on
// a connection of yours, and Dial's (or zk://'s) with a session timeout
// set. Dial without one keeps a Driver per distinct TTL. Applications use
// it through a *dlock.Client.
type Driver struct {
	conn  *zk.Conn
	connP atomic.Pointer[zk.Conn] // conn, for onEvent, which may run before conn is set
	owned bool
	root  string // Options.Prefix
	acl   []zk.ACL
	grant *grantState

	plainCreate atomic.Bool // the root's ACL refuses the multi's write to a lock's parent
	rootMade    atomic.Bool // the root node is known to exist (ensure)
	noContainer atomic.Bool // the server answered a container create with UNIMPLEMENTED (before 3.5)
	parents     parentCache // what creates showed of lock parents (parents.go)

	act     activity // what renewed the session at the leader lately (quorum.go)
	renew   batcher  // the renewal proofs' group commit (batch.go)
	release batcher  // the releases' group commit (batch.go)
	// nodeEvents: the watch events of the connection reach onEvent (the
	// callback of Dial's connection, the event channel given to New), so
	// held nodes are watched by the driver, not a goroutine each (loss.go).
	nodeEvents bool
	watches    nodeWatches
	attemptAt  atomic.Int64 // when go-zookeeper's current connection attempt began (unix ns)

	// breaks counts the connection's session events other than
	// StateHasSession. After a reconnect the server replays watches in no
	// particular order, so a waiter may take a predecessor's deletion as
	// its grant only if no break came between arming and firing.
	breaks atomic.Int64

	// Before the first session: connection attempts, and a channel closed
	// once every server has been tried without one (awaitSession).
	nservers     int
	attempts     atomic.Int64
	noServer     chan struct{}
	noServerOnce sync.Once

	connNote atomic.Pointer[func(up bool, detail string)] // NotifyConn's
	connUp   atomic.Bool                                  // the last state told

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	connGone  chan struct{} // closed when the owner of a borrowed conn closed it
	goneOnce  sync.Once
	// done ends the background work (removals, probes): at Close for a
	// connection the driver owns (closing it ends the session and its
	// nodes), when a borrowed one is gone, or when Close's wait for a
	// borrowed connection's removals runs out.
	done     context.Context
	stopBg   context.CancelFunc
	bg       bgGroup     // calls and cleanups that outlive their caller
	used     atomic.Bool // an Acquire ran on this session
	removing sync.Map    // node path -> struct{}: a background removal is on

	mu        sync.Mutex
	sess      *session      // current session; id 0 until known
	connected chan struct{} // closed once the first session is established
}

// The portable layer probes for Capable and Inspector (Client.Capabilities,
// Client.Status).
var (
	_ driver.Driver         = (*Driver)(nil)
	_ driver.Capable        = (*Driver)(nil)
	_ driver.Inspector      = (*Driver)(nil)
	_ driver.RenewCoalescer = (*Driver)(nil)
)

// CoalescesRenewals reports that the renewals of a session's locks in
// flight together share one proof (batch.go).
func (d *Driver) CoalescesRenewals() bool { return true }

func newDriver(o Options) (*Driver, error) {
	root := o.Prefix
	if root == "" {
		root = DefaultPrefix
	}
	if !strings.HasPrefix(root, "/") || path.Clean(root) != root || root == "/" || strings.ContainsRune(root, 0) {
		return nil, driver.InvalidArgument("zklock: Options.Prefix", strconv.Quote(root), "an absolute, clean znode path other than /")
	}
	acl := o.ACL
	if len(acl) == 0 {
		acl = zk.WorldACL(zk.PermAll)
	}
	done, stop := context.WithCancel(context.Background())
	return &Driver{
		root: root, acl: acl,
		grant:     &grantState{asked: o.SessionTimeout, known: make(chan struct{}), probeFailed: make(chan struct{})},
		closing:   make(chan struct{}),
		connGone:  make(chan struct{}),
		noServer:  make(chan struct{}),
		done:      done,
		stopBg:    stop,
		sess:      newSession(0),
		renew:     batcher{op: checkOp},
		release:   batcher{op: deleteOp, single: deleteOne},
		connected: make(chan struct{}),
	}, nil
}

// Capabilities reports strong fencing (the czxid), FIFO grants, and in its
// notes the session timeout in force.
func (d *Driver) Capabilities() driver.Capabilities {
	return capabilities(d.timeoutNote())
}

func capabilities(timeouts string) driver.Capabilities {
	return driver.Capabilities{
		Fencing:   driver.FencingStrong,
		FIFO:      true,
		Scope:     "cluster",
		Shared:    true,
		Semaphore: true,
		Election:  true,
		Notes: "token = czxid of the holder's znode (ensemble-wide, survives failover); " +
			"a lock lives as long as its ZooKeeper session, and the lease's TTL is the session timeout the server granted: " +
			timeouts + "; while disconnected a lock is kept only until " +
			"last answer + session timeout - margin; session expiry loses every lock of the session at once",
	}
}

// closeWait bounds how long Close on a borrowed connection waits for the
// removals still under way.
const closeWait = time.Second

// Close ends the driver within about a second. A connection Dial made is
// closed, which ends the session and deletes its nodes. A connection given
// to New is left open: removals of this driver's nodes still failing (a
// release that got no answer) go on in the background for up to one
// session timeout after Close, by when the session has either expired,
// taking its nodes with it, or come back and let them through.
func (d *Driver) Close() error {
	first := false
	d.closeOnce.Do(func() { first = true; close(d.closing) })
	if !first {
		return driver.ErrClosed
	}
	if d.owned {
		d.stopBg()
		d.conn.Close() // waits at most a second for the server to end the session
	}
	d.mu.Lock()
	d.sess.end()
	d.mu.Unlock()
	if d.owned {
		d.bg.Wait()
		return nil
	}
	done := make(chan struct{})
	go func() { d.bg.Wait(); close(done) }()
	select {
	case <-done:
		d.stopBg()
	case <-time.After(closeWait):
		time.AfterFunc(d.ttl(), d.stopBg)
	}
	return nil
}

// connClosed records that the owner of a borrowed connection closed it.
func (d *Driver) connClosed() {
	d.goneOnce.Do(func() { close(d.connGone) })
	d.stopBg()
}
