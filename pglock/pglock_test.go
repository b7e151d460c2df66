package pglock

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHolder) != "" {
		holderMain()
	}
	goleak.VerifyTestMain(m,
		// pgxpool's background health check ends with Close, but may not
		// have returned when the last test does.
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"),
	)
}

// testTable keeps the tests' tokens apart from a real application's.
const testTable = "dlocktest_tokens"

// newPool connects to url through a fault proxy of its own; pool and proxy
// are closed at cleanup.
func newPool(tb testing.TB, url string) (*pgxpool.Pool, *faultproxy.Proxy) {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("pool config: %v", err)
	}
	up := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	p, err := faultproxy.Start(up)
	if err != nil {
		tb.Fatalf("fault proxy: %v", err)
	}
	tb.Cleanup(func() { p.Close() })
	host, port, _ := net.SplitHostPort(p.Addr())
	pn, _ := strconv.Atoi(port)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(pn), nil
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool, p
}

// adminPool connects to url directly, for what a test does behind the
// drivers' backs.
func adminPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatalf("pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

type harness struct {
	t     *testing.T
	url   string
	admin *pgxpool.Pool
	mu    sync.Mutex
	conns map[driver.Driver]*faultproxy.Proxy
}

var (
	_ drivertest.Faulter    = (*harness)(nil)
	_ drivertest.ConnBound  = (*harness)(nil)
	_ drivertest.Crasher    = (*harness)(nil)
	_ drivertest.LossForcer = (*harness)(nil)
)

func newHarness(t *testing.T, url string) *harness {
	return &harness{t: t, url: url, admin: adminPool(t, url), conns: map[driver.Driver]*faultproxy.Proxy{}}
}

// MakeDriver returns a driver whose pool (and every session it opens)
// reaches the server through a fault proxy of its own.
func (h *harness) MakeDriver(context.Context) (driver.Driver, error) {
	pool, p := newPool(h.t, h.url)
	d, err := NewDriver(pool, &Options{Table: testTable})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.conns[d] = p
	h.mu.Unlock()
	return d, nil
}

func (h *harness) proxy(d driver.Driver) (*faultproxy.Proxy, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.conns[d]
	if p == nil {
		return nil, fmt.Errorf("pglock harness: driver %p was not made by this harness", d)
	}
	return p, nil
}

func (h *harness) ConnKinds() []string { return nil }

// LocksDieWithConnection implements drivertest.ConnBound: a session-level
// advisory lock ends with its session.
func (h *harness) LocksDieWithConnection() bool { return true }

func (h *harness) Fault(d driver.Driver, kind string, f drivertest.Fault) (func(), error) {
	if kind != "" {
		return nil, fmt.Errorf("pglock harness: no connection kind %q; want \"\"", kind)
	}
	p, err := h.proxy(d)
	if err != nil {
		return nil, err
	}
	return faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, f), nil
}

func (h *harness) Close() {}

// ForceLoss terminates the sessions holding the lock, as an operator's
// pg_terminate_backend would.
func (h *harness) ForceLoss(ctx context.Context, name string) error {
	key := Key(name)
	var n int
	err := h.admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid::bigint = $1 AND objid::bigint = $2`,
		int64(uint64(key)>>32), int64(uint32(key))).Scan(&n)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no session holds %q", name)
	}
	return nil
}

// LossEndsSession: ForceLoss ends the holder's session, and every lock its
// client keeps on it (locks of one TTL share a session).
func (h *harness) LossEndsSession() bool { return true }

// Crash stalls the driver's connections, for good: the server sees no end
// of them, so the holder's session is cut off by idle_session_timeout when
// the TTL has passed since its last statement.
func (h *harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	p, err := h.proxy(d)
	if err != nil {
		return false, err
	}
	faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, drivertest.Fault{Stall: true})
	return false, nil
}

func TestConformance(t *testing.T) {
	url := testserver.Postgres(t)
	drivertest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, url), nil
	})
}
