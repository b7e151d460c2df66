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

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient connects to endpoints with a client of its own, closed at cleanup.
func newClient(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

type harness struct {
	t         *testing.T
	endpoints []string
	admin     *clientv3.Client
	mu        sync.Mutex
	clients   map[driver.Driver]*clientv3.Client
}

func newHarness(t *testing.T, endpoints []string) *harness {
	return &harness{t: t, endpoints: endpoints, admin: newClient(t, endpoints), clients: map[driver.Driver]*clientv3.Client{}}
}

func (h *harness) MakeDriver(context.Context) (driver.Driver, error) {
	cli := newClient(h.t, h.endpoints)
	d, err := NewDriver(cli, Options{Prefix: "dlocktest"})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.clients[d] = cli
	h.mu.Unlock()
	return d, nil
}

func (h *harness) Close() {}

// ShortTTL is the smallest lease TTL the test clusters grant (1.5 x the
// 1 s election timeout, rounded up to whole seconds).
func (h *harness) ShortTTL() time.Duration { return 2 * time.Second }

// ForceLoss deletes the holder's key, as `etcdctl del` would.
func (h *harness) ForceLoss(ctx context.Context, name string) error {
	pfx := (&etcdDriver{root: "dlocktest/"}).namePrefix(name)
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

// Crash closes the driver's etcd client without revoking its lease: the
// server frees its keys when the lease expires.
func (h *harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	h.mu.Lock()
	cli := h.clients[d]
	h.mu.Unlock()
	return false, cli.Close()
}

func TestConformance(t *testing.T) {
	endpoints := testserver.Etcd(t)
	drivertest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (drivertest.Harness, error) {
		return newHarness(t, endpoints), nil
	})
}
