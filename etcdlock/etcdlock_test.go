package etcdlock

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient connects to endpoints with a client of its own, closed at cleanup.
func newClient(tb testing.TB, endpoints []string, dialOpts ...grpc.DialOption) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: dialOpts})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// conn is one client's way to etcd, through a fault proxy per member (every
// gRPC connection) and a stream interceptor (its watch streams alone).
type conn struct {
	cli     *clientv3.Client
	proxies []*faultproxy.Proxy
	watch   *streamFaults
}

// newConn makes a client that reaches endpoints through proxies of its own;
// client and proxies are closed at cleanup.
func newConn(tb testing.TB, endpoints []string) *conn {
	tb.Helper()
	c := &conn{watch: newStreamFaults()}
	var addrs []string
	for _, ep := range endpoints {
		p, err := faultproxy.Start(ep)
		if err != nil {
			tb.Fatalf("fault proxy: %v", err)
		}
		tb.Cleanup(func() { p.Close() }) // after the client's Close, registered below
		c.proxies = append(c.proxies, p)
		addrs = append(addrs, p.Addr())
	}
	c.cli = newClient(tb, addrs, grpc.WithChainStreamInterceptor(c.watch.interceptor))
	return c
}

// connKinds are the kinds of connection conn.fault can single out, besides
// "" (all of them).
var connKinds = []string{"watch"}

// fault applies f to c's connections of a kind (see drivertest.Faulter).
func (c *conn) fault(kind string, f drivertest.Fault) (undo func(), err error) {
	switch kind {
	case "":
		return faultproxy.Apply(c.proxies, faultproxy.Any, f), nil
	case "watch":
		return c.watch.add(f), nil
	}
	return nil, fmt.Errorf("etcdlock harness: no connection kind %q; want \"\" or one of %q", kind, connKinds)
}

type harness struct {
	t         *testing.T
	endpoints []string
	admin     *clientv3.Client
	mu        sync.Mutex
	conns     map[driver.Driver]*conn
}

var (
	_ drivertest.Faulter = (*harness)(nil)
	_ drivertest.Crasher = (*harness)(nil)
)

func newHarness(t *testing.T, endpoints []string) *harness {
	return &harness{t: t, endpoints: endpoints, admin: newClient(t, endpoints), conns: map[driver.Driver]*conn{}}
}

// MakeDriver returns a driver whose client reaches etcd through fault
// proxies of its own.
func (h *harness) MakeDriver(context.Context) (driver.Driver, error) {
	c := newConn(h.t, h.endpoints)
	d, err := NewDriver(c.cli, &Options{Prefix: "dlocktest"})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.conns[d] = c
	h.mu.Unlock()
	return d, nil
}

func (h *harness) conn(d driver.Driver) (*conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.conns[d]
	if c == nil {
		return nil, fmt.Errorf("etcdlock harness: driver %p was not made by this harness", d)
	}
	return c, nil
}

func (h *harness) ConnKinds() []string { return connKinds }

func (h *harness) Fault(d driver.Driver, kind string, f drivertest.Fault) (func(), error) {
	c, err := h.conn(d)
	if err != nil {
		return nil, err
	}
	return c.fault(kind, f)
}

func (h *harness) Close() {}

// ShortTTL is the smallest lease TTL the test clusters grant (1.5 x the
// 1 s election timeout, rounded up to whole seconds).
func (h *harness) ShortTTL() time.Duration { return 2 * time.Second }

// ForceLoss deletes the holder's key, as `etcdctl del` would.
func (h *harness) ForceLoss(ctx context.Context, name string) error {
	pfx := (&Driver{root: "dlocktest/"}).namePrefix(name)
	resp, err := h.admin.Get(ctx, pfx, append(clientv3.WithFirstCreate(), clientv3.WithPrefix())...)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("no key under %q", pfx)
	}
	_, err = h.admin.Delete(ctx, string(resp.Kvs[0].Key))
	return err
}

// Crash cuts the driver's connections to every member and refuses new
// ones, for good, without releasing anything: the server frees its keys
// when the lease expires.
func (h *harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	c, err := h.conn(d)
	if err != nil {
		return false, err
	}
	_, err = c.fault("", drivertest.Fault{Down: true})
	return false, err
}

func TestConformance(t *testing.T) {
	endpoints := testserver.Etcd(t)
	drivertest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, endpoints), nil
	})
}
