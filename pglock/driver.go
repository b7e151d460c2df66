package pglock

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// cancelWait is how long a cancelled statement waits for the server to
// confirm the cancellation before the connection is given up (and with it
// the session's locks, which the server then frees).
const cancelWait = 2 * time.Second

// closeTimeout bounds what Close waits for.
const closeTimeout = time.Second

// Options configure a driver. The zero value (or a nil *Options) means the
// documented defaults.
type Options struct {
	// Table is the table of fencing counters, "name" or "schema.name"
	// (DefaultTable if empty). The driver creates it if it is missing.
	// Clients that contend for the same locks must use the same table.
	Table string
}

// New returns a dlock client whose locks are PostgreSQL advisory locks,
// configured by o (nil for the defaults) and opts. The driver opens the
// connections that hold locks with pool's configuration (never taking them
// from the pool, whose connections go back to it); it uses pool itself for
// its other statements. It does not own pool: closing the client leaves
// pool open.
func New(pool *pgxpool.Pool, o *Options, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := NewDriver(pool, o)
	if err != nil {
		return nil, fmt.Errorf("pglock.New: %w", err)
	}
	return dlock.NewClient(d, opts...)
}

// NewDriver returns the PostgreSQL driver itself, configured by o (nil for
// the defaults), for dlock.NewClient or a wrapper of the driver. It does
// not own pool.
func NewDriver(pool *pgxpool.Pool, o *Options) (*Driver, error) {
	if pool == nil {
		return nil, driver.InvalidArgument("pglock: pool", "<nil>", "a *pgxpool.Pool")
	}
	if o == nil {
		o = &Options{}
	}
	table := o.Table
	if table == "" {
		table = DefaultTable
	}
	if !validTable(table) {
		return nil, driver.InvalidArgument("pglock: Options.Table", fmt.Sprintf("%q", o.Table), `"name" or "schema.name"`)
	}
	return newDriver(pool, table, false), nil
}

func validTable(table string) bool {
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.ContainsRune(p, 0) {
			return false
		}
	}
	return true
}

// Driver is the PostgreSQL driver: a pool, the sessions holding locks and
// the waits in progress. Its methods are called by the portable layer
// (dlock.Client), not by applications.
type Driver struct {
	pool  *pgxpool.Pool
	owns  bool // close pool on Close (made by the URL opener)
	table string
	q     queries

	closeCtx context.Context // cancelled by Close: ends waits
	closeFn  context.CancelFunc

	mu       sync.Mutex
	closed   bool
	created  bool                                // the token table is known to exist
	sessions map[time.Duration]map[*session]bool // by TTL: sessions locks may join
	waiting  map[*session]bool                   // sessions waiting for a lock
	opening  map[time.Duration]int               // by TTL: sessions pick is opening
	opened   chan struct{}                       // closed (and replaced) when pick has opened one
	wg       sync.WaitGroup                      // the watchers

	renewStatements   atomic.Int64 // renewal statements sent (batch.go), for tests
	releaseStatements atomic.Int64 // release statements sent (release.go), for tests
	grantStatements   atomic.Int64 // batched try-lock statements sent (grant.go), for tests

	connMu   sync.Mutex                   // orders the news of the connection (conn.go)
	connNote func(up bool, detail string) // NotifyConn's
	connDown bool                         // the state told last
}

// The portable layer probes for Capable and Inspector.
var (
	_ driver.Driver    = (*Driver)(nil)
	_ driver.Capable   = (*Driver)(nil)
	_ driver.Inspector = (*Driver)(nil)
	_ driver.Lock      = (*lock)(nil)
)

func newDriver(pool *pgxpool.Pool, table string, owns bool) *Driver {
	ctx, cancel := context.WithCancel(context.Background())
	return &Driver{
		pool: pool, owns: owns, table: table, q: newQueries(table),
		closeCtx: ctx, closeFn: cancel,
		sessions: map[time.Duration]map[*session]bool{},
		waiting:  map[*session]bool{},
		opening:  map[time.Duration]int{},
		opened:   make(chan struct{}),
	}
}

// Pool returns the pool the driver uses: the one given to New or
// NewDriver, or the one the URL opener made. A program may keep its own
// data through it (and take transaction-scoped locks on it with Tx).
func (d *Driver) Pool() *pgxpool.Pool { return d.pool }

// Capabilities: strong fencing (the counter row is written to the WAL with
// the grant, and survives restarts and failover to a synchronous standby),
// FIFO (the server's lock queue), read-write locks (shared advisory locks).
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingStrong,
		FIFO:    true,
		Scope:   "cluster",
		Shared:  true,
		Notes: "advisory locks of one PostgreSQL server (a failover loses them: the locks are not replicated, " +
			"the tokens are); needs session-level locks, so not through PgBouncer in transaction mode; " +
			"the server frees a silent holder's locks after the TTL only from PostgreSQL 14 (idle_session_timeout); " +
			"a successor of a holder whose session ended without releasing waits out that holder's lease " +
			"(noted in the key's row of the token table)",
	}
}

// Close ends every session (the server frees their locks) and every wait.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	var all []*session
	for _, m := range d.sessions {
		for s := range m {
			all = append(all, s)
		}
	}
	for s := range d.waiting {
		all = append(all, s)
	}
	d.mu.Unlock()
	d.closeFn()
	for _, s := range all {
		s.kill(errClosed)
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
	}
	if d.owns {
		d.pool.Close()
	}
	return nil
}

// forget drops an ended session.
func (d *Driver) forget(s *session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m := d.sessions[s.group]; m != nil {
		delete(m, s)
	}
	delete(d.waiting, s)
}
