// Package dlock provides distributed locks with fencing tokens, renewal and
// loss detection, over interchangeable engines: in-process (memlock), a file
// on one host (filelock), Redis (redislock), etcd (etcdlock) and ZooKeeper
// (zklock).
//
// A Client is one connection to an engine, made by Open from a URL or by a
// driver package's constructor from your own engine client. Client.Mutex
// names a lock; Mutex.Lock waits for it and returns a *Lease. Client.RWMutex
// (readers and writers), Client.Semaphore (at most n holders) and
// Client.Election (one leader, with a published value) hand out the same
// leases, where the engine offers them (Capabilities).
//
// A lease carries a fencing token that strictly increases, per lock name, in
// the order the lock was granted: pass it to the resource you protect and let
// the resource refuse writes with an older token. Holding a lease does not
// stop a paused or partitioned holder from acting after the engine has given
// the lock to someone else; the token lets the resource tell.
//
// While held, a lease renews itself every renew interval. It is declared lost
// (Done closed, Context cancelled, Err matching ErrLockLost) as soon as the
// engine reports the lock gone, or when renewals have failed until
// lastRenewalSent+TTL-margin on the monotonic clock, which is before the
// engine can grant the lock to anyone else.
package dlock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Client is a connection to a lock engine. It is safe for concurrent use.
type Client struct {
	drv driver.Driver
	cfg config
	tel *telemetry

	closeCtx context.Context // cancelled by Close
	closeFn  context.CancelFunc

	mu     sync.Mutex
	closed bool
	leases map[*Lease]struct{}
	calls  sync.WaitGroup // Lock/TryLock calls and lease timers' work in flight

	coalesce bool       // the driver batches concurrent renewals: renew on a grid
	grid     *renewGrid // schedules the renewals if coalesce
}

// NewClient wraps a driver in a Client, which from then on owns it. Driver
// packages call it from their typed constructors; applications rarely need
// it. If the options are bad it closes drv and returns the error.
func NewClient(drv driver.Driver, opts ...Option) (*Client, error) {
	if drv == nil {
		return nil, wrap("", "new client", invalid("driver", nil, "a non-nil driver.Driver"))
	}
	cfg := defaultConfig().with(opts)
	if _, err := cfg.resolved(); err != nil {
		drv.Close()
		return nil, wrap("", "new client", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc, ok := drv.(driver.RenewCoalescer)
	c := &Client{
		drv: drv, cfg: cfg, tel: newTelemetry(cfg, drv), closeCtx: ctx, closeFn: cancel, leases: map[*Lease]struct{}{},
		coalesce: ok && rc.CoalescesRenewals(),
	}
	if c.coalesce {
		c.grid = newRenewGrid()
	}
	if cn, ok := drv.(driver.ConnNotifier); ok && c.tel.log != nil {
		cn.NotifyConn(c.connChanged)
	}
	return c, nil
}

// connChanged logs the driver's news of its connection to the engine, with
// how many leases the client holds: they ride out the outage as long as
// their deadlines allow (each one's renewal failures and loss are logged
// with its name and token).
func (c *Client) connChanged(up bool, detail string) {
	c.mu.Lock()
	held := len(c.leases)
	c.mu.Unlock()
	log := c.tel.log
	if up {
		log.Info("dlock: engine connection restored", "dlock.driver", c.tel.driver.Value.AsString(), "detail", detail, "dlock.held", held)
		return
	}
	log.Warn("dlock: engine connection lost", "dlock.driver", c.tel.driver.Value.AsString(), "detail", detail, "dlock.held", held)
}

// Mutex returns the mutual-exclusion lock called name. Any bytes make a
// name; the driver encodes them for its engine. Options override the
// client's for this mutex. Bad names or options are reported by Lock.
func (c *Client) Mutex(name string, opts ...Option) *Mutex {
	return &Mutex{c: c, name: name, cfg: c.cfg.with(opts)}
}

// Capabilities reports what the driver promises (fencing strength, fairness).
// The zero value means the driver does not say.
func (c *Client) Capabilities() Capabilities {
	if cp, ok := c.drv.(driver.Capable); ok {
		return cp.Capabilities()
	}
	return Capabilities{}
}

// Status reports whether name is held, by which token, for how much longer
// and how many wait, for drivers that can tell. Others return an error
// matching ErrNotSupported (and errors.ErrUnsupported).
func (c *Client) Status(ctx context.Context, name string) (Status, error) {
	if ctx == nil {
		return Status{}, wrap(name, "status", invalid("ctx", nil, "a non-nil context.Context"))
	}
	if name == "" {
		return Status{}, wrap(name, "status", invalid("name", `""`, "a non-empty lock name"))
	}
	in, ok := c.drv.(driver.Inspector)
	if !ok {
		return Status{}, wrap(name, "status", fmt.Errorf("%w: the driver (%T) cannot report a lock's status", ErrNotSupported, c.drv))
	}
	st, err := in.Status(ctx, name)
	if err != nil {
		return st, wrap(name, "status", err)
	}
	if st.Held && st.Holders == 0 {
		st.Holders = 1
	}
	return st, nil
}

// List reports the locks held or awaited now whose names start with
// prefix, in byte order of their names, with their status, for drivers that
// can enumerate their engine's locks. Others return an error matching
// ErrNotSupported.
func (c *Client) List(ctx context.Context, prefix string) ([]Listed, error) {
	if ctx == nil {
		return nil, wrap(prefix, "list", invalid("ctx", nil, "a non-nil context.Context"))
	}
	ls, ok := c.drv.(driver.Lister)
	if !ok {
		return nil, wrap(prefix, "list", fmt.Errorf("%w: the driver (%T) cannot list locks", ErrNotSupported, c.drv))
	}
	got, err := ls.List(ctx, prefix)
	if err != nil {
		return nil, wrap(prefix, "list", err)
	}
	for i := range got {
		if st := &got[i].Status; st.Held && st.Holders == 0 {
			st.Holders = 1
		}
	}
	return got, nil
}

// Driver returns the driver behind the client, for optional interfaces.
func (c *Client) Driver() driver.Driver { return c.drv }

// CloseTimeout bounds how long Close, and each Unlock, wait for the engine
// to answer a release.
const CloseTimeout = 5 * time.Second

// Close ends every lease the client holds (their Done channels close at
// once, before any round trip), makes waiting Lock calls return ErrClosed,
// releases the leases' locks in parallel, and closes the driver. The
// releases wait for the engine at most CloseTimeout (or a lease's TTL, if
// shorter), and then the driver's own Close runs, which the drivers of this
// module bound to about a second: a lock whose release was not answered is
// dropped by the engine when its TTL runs out. Close reports releases that
// failed. Later calls return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	leases := make([]*Lease, 0, len(c.leases))
	for l := range c.leases {
		leases = append(leases, l)
	}
	c.mu.Unlock()
	c.closeFn() // waits end, background releases stop
	if c.grid != nil {
		c.grid.close()
	}

	// A lease ended by a loss or an Unlock that raced with this Close has
	// left its release to us (l.unreleased), as have the ones ended here.
	var ended []*Lease
	for _, l := range leases {
		l.finish(stateEnded, ErrClosed)
		c.mu.Lock()
		if l.unreleased {
			l.unreleased = false
			ended = append(ended, l)
		}
		c.mu.Unlock()
	}
	errs := make([]error, len(ended)+1)
	var wg sync.WaitGroup
	for i, l := range ended {
		wg.Go(func() {
			if err := l.release(context.Background(), false); err != nil && !isEnded(err) {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	c.calls.Wait()
	if err := c.drv.Close(); err != nil {
		errs[len(ended)] = wrap("", "close", err)
	}
	return errors.Join(errs...)
}

// begin registers a call in flight; it fails once the client is closed.
func (c *Client) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.calls.Add(1)
	return nil
}

// OpenFunc opens a driver for a URL whose scheme it was registered for.
type OpenFunc func(ctx context.Context, u *url.URL) (driver.Driver, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a driver available to Open under a URL scheme. Drivers call
// it from init. It panics if scheme is empty or registered twice, or if open
// is nil, as these are programming errors.
func Register(scheme string, open OpenFunc) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if scheme == "" || strings.ToLower(scheme) != scheme {
		panic("dlock: Register: scheme must be non-empty and lower case, got " + strconv.Quote(scheme))
	}
	if open == nil {
		panic("dlock: Register: nil OpenFunc for scheme " + strconv.Quote(scheme))
	}
	if _, dup := registry[scheme]; dup {
		panic("dlock: Register called twice for scheme " + strconv.Quote(scheme))
	}
	registry[scheme] = open
}

// Schemes lists the registered URL schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// Open connects to the engine named by rawURL, such as
// "etcd://10.0.0.1:2379/locks", "redis://:pw@host:6379/0", "zk://h1:2181/app",
// "file:///run/myapp/locks" or "mem://". The scheme's driver package must be
// imported (for its side effect of registering the scheme). Options apply to
// every mutex of the client.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, wrap("", "open", fmt.Errorf("%w: URL %q: %s", ErrInvalidArgument, redact(rawURL), parseProblem(err)))
	}
	if u.Scheme == "" {
		return nil, wrap("", "open", invalid("URL", strconv.Quote(redact(rawURL)), "scheme://…, with a scheme among "+strings.Join(Schemes(), ", ")))
	}
	registryMu.RLock()
	open := registry[u.Scheme]
	registryMu.RUnlock()
	if open == nil {
		return nil, wrap("", "open", fmt.Errorf("%w: unknown URL scheme %q (registered: %s; forgotten import of its driver package?)",
			ErrInvalidArgument, u.Scheme, strings.Join(Schemes(), ", ")))
	}
	drv, err := open(ctx, u)
	if err != nil {
		return nil, scrub(&Error{Op: "open", Name: redactURL(u), Err: err}, secrets(u))
	}
	c, err := NewClient(drv, opts...)
	if err != nil {
		return nil, err
	}
	return c, nil
}
