package redislock

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) != "" {
		os.Exit(holderMain())
	}
	goleak.VerifyTestMain(m)
}

// harness gives each driver clients of its own to addrs (one address: a
// single node; several: Redlock), as separate processes would have.
type harness struct {
	addrs []string
	admin []*redis.Client

	mu      sync.Mutex
	clients map[driver.Driver][]*redis.Client
}

func newHarness(addrs []string) *harness {
	h := &harness{addrs: addrs, clients: map[driver.Driver][]*redis.Client{}}
	for _, a := range addrs {
		h.admin = append(h.admin, redis.NewClient(&redis.Options{Addr: a}))
	}
	return h
}

func (h *harness) MakeDriver(context.Context) (driver.Driver, error) {
	var cs []*redis.Client
	var ucs []redis.UniversalClient
	for _, a := range h.addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		cs, ucs = append(cs, c), append(ucs, c)
	}
	d, err := newDriver(ucs, Options{}, true)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.clients[d] = cs
	h.mu.Unlock()
	return d, nil
}

// ShortTTL leaves a renewal round trip to five nodes room on a loaded
// 2-core machine running every package's tests under -race at once (1 s
// was seen to lose a Redlock lease whose renewal had not answered in time).
func (h *harness) ShortTTL() time.Duration { return 2 * time.Second }

func (h *harness) Close() {
	for _, c := range h.admin {
		c.Close()
	}
}

// ForceLoss deletes the lock key everywhere, as an operator would.
func (h *harness) ForceLoss(ctx context.Context, name string) error {
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	for _, c := range h.admin {
		if err := c.Del(ctx, k.lock).Err(); err != nil {
			return err
		}
	}
	return nil
}

// Crash closes the driver's clients without releasing anything: its keys
// stay until their TTL runs out.
func (h *harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	h.mu.Lock()
	cs := h.clients[d]
	h.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return false, nil
}

func TestConformance(t *testing.T) {
	addrs := testserver.Redis(t)
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		return newHarness(addrs[:1]), nil
	})
}

func TestConformanceRedlock(t *testing.T) {
	addrs := testserver.Redis(t)
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		return newHarness(addrs), nil
	})
}
