// Package zklock is the ZooKeeper driver of dlock: a FIFO queue of
// protected ephemeral-sequential znodes, one queue per lock name, where
// each waiter watches only its predecessor.
//
//	c, err := dlock.Open(ctx, "zk://user:secret@h1:2181,h2:2181/myapp/locks", dlock.WithTTL(5*time.Second))
//	c, err := zklock.Dial(ctx, []string{"h1:2181", "h2:2181"}, zklock.Options{}, dlock.WithTTL(5*time.Second))
//
// or, on a connection of your own,
//
//	conn, events, err := zk.Connect(servers, 10*time.Second)
//	c, err := zklock.New(conn, events, zklock.Options{SessionTimeout: 10 * time.Second})
//
// # How a lock is held
//
// Lock name N lives at <Root>/<encoded N>, a container node the server
// removes once empty. Acquire creates <Root>/<N>/_c_<guid>-lock-<seq>, an
// ephemeral sequential node whose name carries a fresh guid (Curator's
// "protected" mode): if the connection drops before the create's reply
// arrives, the driver lists the queue and finds its node by the guid rather
// than leaving an orphan that would block everyone until the session ends.
// The node with the lowest sequence holds the lock; every other node
// watches the one just before it, so a release wakes one waiter, not the
// herd. The fencing token is the holder node's czxid: the zxid of the
// transaction that created it, which increases across the whole ensemble
// and survives leader failover. Grant order is queue order, which is
// creation order, so tokens increase in grant order.
//
// # One round trip for an uncontended Lock
//
// go-zookeeper has no create2 (a create that returns the new node's stat),
// so the create is a multi that also writes the parent's data
// unconditionally: the parent's stat in the reply has mzxid = the multi's
// zxid = our node's czxid. The queue listing is sent right behind it on the
// same connection; the server answers a session's requests in order, so the
// listing sees our node and an uncontended Lock waits for the create's
// round trip alone. (When the listing happens to be sent first, the driver
// reads again.) The stat and watch of our own node (session check, loss
// watch) go out as soon as the create's reply is in, and nobody waits for
// them on a grant. A parent whose ACL refuses the write makes the driver
// fall back to a plain create and read the czxid after it.
//
// # Sessions, and why the lease TTL is the session timeout
//
// A ZooKeeper lock lives as long as its session: the server deletes the
// session's ephemeral nodes when it has heard nothing from the client for
// the session timeout it granted. So the session timeout is the only TTL
// the engine has, and the driver uses the TTL asked for as the session
// timeout:
//
//   - Open (zk:// without session_timeout) and Dial (Options.SessionTimeout
//     zero) put each lock in a session whose timeout is the lock's TTL
//     (dlock.WithTTL, given to the client or to one mutex; dlock.DefaultTTL
//     otherwise). They keep one session per distinct TTL, made when a lock
//     first asks for it, up to 8; a ninth distinct TTL is refused with
//     ErrInvalidArgument. The first session, which Dial makes to check the
//     servers, has dlock.DefaultTTL and is closed once a lock asks for
//     another TTL if no lock used it.
//   - ?session_timeout= (Options.SessionTimeout > 0), and New, use one
//     session with that timeout for every lock, whatever TTL the lock asks
//     for: the lease's TTL is the session timeout, and the portable layer
//     scales its safety margin and renew interval to it.
//
// The server clamps the timeout asked to its [minSessionTimeout,
// maxSessionTimeout] (2 and 20 × tickTime by default: 4 s to 40 s with the
// sample configuration's tickTime of 2 s). The driver uses the timeout granted, read from
// the server's connect response on every connection it makes (go-zookeeper
// does not expose it; on New's borrowed connection a probe session learns
// it), so a lease never outlives what the server enforces. When the grant
// differs from the request, Client.Capabilities().Notes says so: a lock
// asking a TTL above maxSessionTimeout lives (and renews) on the shorter
// window; one below minSessionTimeout is freed only after the longer one
// when its holder vanishes.
//
// Validity reports TTL = granted session timeout from the send time of the
// last request the server answered (the create, the queue read that
// granted the lock, or a renewal's existence check): the server had heard
// from us then, so it cannot have expired the session, and with it the
// lock, before that time plus the timeout.
//
// go-zookeeper declares the connection lost after ⅔ of the timeout without
// a reply and spends the remaining third trying other servers, hoping to
// resume the session before the server expires it. While disconnected
// (Curator calls it SUSPENDED) the lock may or may not still be held;
// Renew then fails with an error that is not ErrLockLost, so the portable
// layer keeps the lease only until lastAnswer + timeout − margin and then
// declares it lost, which is before the server could have expired the
// session and granted the lock to the next node. If the connection comes
// back in time with the same session the next renewal succeeds and nothing
// was lost. When the server reports the session expired, every lock of the
// session reports lost at once (Lost); a node deleted by someone else is
// noticed through a watch on it. go-zookeeper then opens a new session on
// its own, and new locks are taken on it.
//
// # Errors, outages and clean-up
//
// Errors that may pass with the connection — no server reachable, the
// connection dropped, the session expired or moved — are marked
// driver.Unavailable, so a blocking Lock waits them out; what the server
// decided (no auth, bad ACL, ...) is reported as it is. A *zk.Conn given to
// New and closed by its owner makes every call fail at once with an
// unmarked error.
//
// A node the driver could not delete (a Release whose context ended or
// whose connection was down, a Lock cancelled while queued) is removed in
// the background, retried with backoff until it is gone: left behind, it
// would block its queue for as long as its session lives, and a session
// can ride out an outage (or a loss of quorum, which stops expiry). The
// retries end when the driver closes: a connection the driver owns is then
// closed, which ends the session and its nodes; on New's connection they go
// on in the background for up to one session timeout after Close, which
// itself returns within about a second.
package zklock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// DefaultRoot is the znode under which lock queues live.
const DefaultRoot = "/dlock"

// maxSessions bounds the sessions of a driver that follows the TTL: one per
// distinct TTL asked.
const maxSessions = 8

// Options configure the driver. The zero value means the defaults.
type Options struct {
	// Root is the znode under which the lock queues live (DefaultRoot).
	// It is created if missing.
	Root string
	// SessionTimeout is the session timeout asked of the server.
	//
	// With Dial, zero (the default) means: follow the TTL. Each lock lives
	// in a session whose timeout is the TTL it was asked with
	// (dlock.WithTTL, on the client or on the mutex); the driver opens one
	// session per distinct TTL, on first use, up to 8. A value > 0 makes
	// one session with that timeout for every lock, whatever their TTL.
	//
	// With New it is required and must be the value given to zk.Connect.
	//
	// Either way the server may grant another timeout (it clamps the asked
	// one to its [minSessionTimeout, maxSessionTimeout], 2 and 20 ticks by
	// default); the driver uses the one granted, and Capabilities says so
	// when it differs.
	SessionTimeout time.Duration
	// Auth is "user:password" for ZooKeeper digest authentication; Dial
	// adds it to the connection. It is never logged.
	Auth string
	// ACL of the nodes the driver creates: by default open to all, or to
	// the authenticated user alone when Auth is set.
	ACL []zk.ACL
	// Dialer replaces net.DialTimeout for Dial's connections, and for the
	// probe by which New learns the session timeout the server grants.
	Dialer zk.Dialer
}

func init() {
	dlock.Register("zk", openURL)
}

// openURL opens zk://[user:password@]h1:2181,h2:2181[/root][?session_timeout=10s].
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	var o Options
	if u.Host == "" {
		return nil, fmt.Errorf("%w: zk URL %q: want zk://host:port[,host:port...][/root]", dlock.ErrInvalidArgument, u.Redacted())
	}
	servers := strings.Split(u.Host, ",")
	for _, s := range servers {
		if s == "" {
			return nil, fmt.Errorf("%w: zk URL %q: an empty server in the host list: want zk://host:port[,host:port...][/root]", dlock.ErrInvalidArgument, u.Redacted())
		}
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		o.Auth = u.User.Username() + ":" + pw
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" {
		o.Root = p
	}
	q := u.Query()
	for k := range q {
		if k != "session_timeout" {
			return nil, fmt.Errorf("%w: zk URL %q: unknown parameter %q (known: session_timeout)", dlock.ErrInvalidArgument, u.Redacted(), k)
		}
	}
	if v := q.Get("session_timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: zk URL %q: session_timeout = %q: want a duration > 0 such as 10s", dlock.ErrInvalidArgument, u.Redacted(), v)
		}
		o.SessionTimeout = d
	}
	return dialAny(ctx, servers, o)
}

// New returns a client whose locks live on conn's session. events must be
// the channel zk.Connect returned with conn (or nil if the events reach the
// driver some other way, which loses prompt loss detection on session
// expiry, and the notice that the owner closed conn): the driver reads it
// until it is closed or the client is closed. o.SessionTimeout must be the
// timeout given to zk.Connect.
//
// go-zookeeper does not tell which session timeout the server granted, so
// the driver learns it with a probe: a session of its own with the server
// conn uses, asked for o.SessionTimeout and closed at once; again when conn
// moves to another server. Locks are granted once it is known. The probe
// dials with o.Dialer (net.DialTimeout if nil).
//
// Closing the client leaves conn open.
func New(conn *zk.Conn, events <-chan zk.Event, o Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := newBorrowed(conn, events, o)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

func newBorrowed(conn *zk.Conn, events <-chan zk.Event, o Options) (*zkDriver, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: zklock.New: conn = nil: want a *zk.Conn", dlock.ErrInvalidArgument)
	}
	if o.SessionTimeout <= 0 {
		return nil, fmt.Errorf("%w: zklock.New: Options.SessionTimeout = %v: want the session timeout given to zk.Connect", dlock.ErrInvalidArgument, o.SessionTimeout)
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
		d.bg.Add(1)
		go d.drain(events)
	}
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
func Dial(ctx context.Context, servers []string, o Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := dialAny(ctx, servers, o)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

// dialAny makes the driver for Dial and the zk:// URL: one session with the
// given timeout, or sessions that follow the TTL.
func dialAny(ctx context.Context, servers []string, o Options) (driver.Driver, error) {
	if len(servers) == 0 {
		return nil, fmt.Errorf("%w: zklock: servers: want at least one host:port", dlock.ErrInvalidArgument)
	}
	for i, s := range servers {
		if strings.TrimSpace(s) == "" {
			return nil, fmt.Errorf("%w: zklock: servers[%d] is empty: want host:port", dlock.ErrInvalidArgument, i)
		}
	}
	if o.SessionTimeout < 0 {
		return nil, fmt.Errorf("%w: zklock: Options.SessionTimeout = %v: want 0 (follow the TTL) or a duration > 0", dlock.ErrInvalidArgument, o.SessionTimeout)
	}
	if o.SessionTimeout > 0 {
		return dialDriver(ctx, servers, o, false)
	}
	return dialPerTTL(ctx, servers, o)
}

// dialDriver makes a driver on one session, asking o.SessionTimeout. It
// waits for the session until ctx is done or, with failFast, until every
// server has been tried once.
func dialDriver(ctx context.Context, servers []string, o Options, failFast bool) (*zkDriver, error) {
	if o.Auth != "" && len(o.ACL) == 0 {
		o.ACL = zk.AuthACL(zk.PermAll)
	}
	d, err := newDriver(o)
	if err != nil {
		return nil, err
	}
	d.owned = true // before onEvent can run
	d.nservers = len(servers)
	dialer := o.Dialer
	if dialer == nil {
		dialer = net.DialTimeout
	}
	conn, _, err := zk.Connect(servers, o.SessionTimeout,
		zk.WithLogger(quiet{}), zk.WithLogInfo(false),
		zk.WithEventCallback(d.onEvent), zk.WithDialer(grantDialer(dialer, d.setGranted)))
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
	return d, nil
}

// quiet drops go-zookeeper's log lines: connection churn is reported through
// errors and lease state, and the library would print server addresses and
// session ids on every reconnect.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// zkDriver is one ZooKeeper session's view of the locks.
type zkDriver struct {
	conn  *zk.Conn
	connP atomic.Pointer[zk.Conn] // conn, for onEvent, which may run before conn is set
	owned bool
	root  string
	acl   []zk.ACL
	grant *grantState

	plainCreate atomic.Bool // the root's ACL refuses the multi's write to a lock's parent

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
	bg       sync.WaitGroup // calls and cleanups that outlive their caller
	used     atomic.Bool    // an Acquire ran on this session
	removing sync.Map       // node path -> struct{}: a background removal is on

	mu        sync.Mutex
	sess      *session      // current session; id 0 until known
	connected chan struct{} // closed once the first session is established
}

var (
	_ driver.Driver    = (*zkDriver)(nil)
	_ driver.Capable   = (*zkDriver)(nil)
	_ driver.Inspector = (*zkDriver)(nil)
)

func newDriver(o Options) (*zkDriver, error) {
	root := o.Root
	if root == "" {
		root = DefaultRoot
	}
	if !strings.HasPrefix(root, "/") || path.Clean(root) != root || root == "/" || strings.ContainsRune(root, 0) {
		return nil, fmt.Errorf("%w: zklock: Root = %q: want an absolute, clean znode path other than /", dlock.ErrInvalidArgument, root)
	}
	acl := o.ACL
	if len(acl) == 0 {
		acl = zk.WorldACL(zk.PermAll)
	}
	done, stop := context.WithCancel(context.Background())
	return &zkDriver{
		root: root, acl: acl,
		grant:     &grantState{asked: o.SessionTimeout, known: make(chan struct{}), probeFailed: make(chan struct{})},
		closing:   make(chan struct{}),
		connGone:  make(chan struct{}),
		noServer:  make(chan struct{}),
		done:      done,
		stopBg:    stop,
		sess:      newSession(0),
		connected: make(chan struct{}),
	}, nil
}

func (d *zkDriver) parent(name string) string { return d.root + "/" + encodeName(name) }

func (d *zkDriver) Capabilities() driver.Capabilities {
	return capabilities(d.timeoutNote())
}

func capabilities(timeouts string) driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingStrong,
		FIFO:    true,
		Scope:   "cluster",
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
func (d *zkDriver) Close() error {
	first := false
	d.closeOnce.Do(func() { first = true; close(d.closing) })
	if !first {
		return dlock.ErrClosed
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
func (d *zkDriver) connClosed() {
	d.goneOnce.Do(func() { close(d.connGone) })
	d.stopBg()
}

// Status reports the holder's token and the number of waiters.
func (d *zkDriver) Status(ctx context.Context, name string) (driver.Status, error) {
	parent := d.parent(name)
	kids, err := call(ctx, d, func() ([]string, error) {
		k, _, err := d.conn.Children(parent)
		return k, err
	})
	if errors.Is(err, zk.ErrNoNode) {
		return driver.Status{}, nil
	}
	if err != nil {
		return driver.Status{}, d.wrapErr(ctx, "list "+parent, err)
	}
	q := queue(kids)
	if len(q) == 0 {
		return driver.Status{}, nil
	}
	st := driver.Status{Held: true, Waiters: len(q) - 1}
	ok, stat, err := call2(ctx, d, func() (bool, *zk.Stat, error) { return d.conn.Exists(parent + "/" + q[0].name) })
	if err != nil {
		return driver.Status{}, d.wrapErr(ctx, "stat holder of "+parent, err)
	}
	if ok {
		st.Token = uint64(stat.Czxid)
	}
	return st, nil
}
