package redislock

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) {
	if os.Getenv(holderEnv) != "" {
		os.Exit(holderMain())
	}
	if os.Getenv(openEnv) != "" {
		os.Exit(openMain())
	}
	goleak.VerifyTestMain(m)
}

// harness gives each driver clients of its own to addrs (one address: a
// single node; several: Redlock), as separate processes would have, each
// through a fault proxy of its own (drivertest.Faulter).
type harness struct {
	addrs []string
	admin []*redis.Client
	opts  *Options // the drivers'; nil for the defaults

	mu      sync.Mutex
	clients map[driver.Driver][]*redis.Client
	proxies map[driver.Driver][]*faultproxy.Proxy
}

var _ drivertest.Faulter = (*harness)(nil)

// pubsubConn matches a go-redis client's pub/sub connections once they have
// subscribed: go-redis writes the command name in lower case, as the bulk
// string matched here, which no script text sent by EVAL contains.
var pubsubConn = faultproxy.Sent("$9\r\nsubscribe\r\n")

func newHarness(addrs []string) *harness {
	h := &harness{addrs: addrs, clients: map[driver.Driver][]*redis.Client{}, proxies: map[driver.Driver][]*faultproxy.Proxy{}}
	for _, a := range addrs {
		h.admin = append(h.admin, redis.NewClient(&redis.Options{Addr: a}))
	}
	return h
}

func (h *harness) MakeDriver(context.Context) (driver.Driver, error) {
	var cs []*redis.Client
	var ucs []redis.UniversalClient
	var ps []*faultproxy.Proxy
	undo := func() {
		for _, c := range cs {
			c.Close()
		}
		for _, p := range ps {
			p.Close()
		}
	}
	for _, a := range h.addrs {
		p, err := faultproxy.Start(a)
		if err != nil {
			undo()
			return nil, err
		}
		c := redis.NewClient(&redis.Options{Addr: p.Addr()})
		cs, ucs, ps = append(cs, c), append(ucs, c), append(ps, p)
	}
	var d *Driver
	var err error
	if len(ucs) == 1 {
		d, err = newSingle("harness", ucs[0], h.opts, true)
	} else {
		d, err = newRedlock("harness", ucs, h.opts, true, nil)
	}
	if err != nil {
		undo()
		return nil, err
	}
	h.mu.Lock()
	h.clients[d] = cs
	h.proxies[d] = ps
	h.mu.Unlock()
	return d, nil
}

// ConnKinds implements drivertest.Faulter: "command" is the connection
// pool of each node's client, "pubsub" the connection the driver's waiters
// share for release messages (a connection counts as pubsub once it has
// sent SUBSCRIBE).
func (h *harness) ConnKinds() []string { return []string{"command", "pubsub"} }

// Fault implements drivertest.Faulter.
func (h *harness) Fault(d driver.Driver, kind string, f drivertest.Fault) (func(), error) {
	var m faultproxy.Match
	switch kind {
	case "":
		m = faultproxy.Any
	case "command":
		m = faultproxy.Not(pubsubConn)
	case "pubsub":
		m = pubsubConn
	default:
		return nil, fmt.Errorf("redislock harness: connection kind %q: want one of %q", kind, h.ConnKinds())
	}
	h.mu.Lock()
	ps := h.proxies[d]
	h.mu.Unlock()
	if ps == nil {
		return nil, fmt.Errorf("redislock harness: driver %p was not made by this harness", d)
	}
	return faultproxy.Apply(ps, m, f), nil
}

// ShortTTL leaves a renewal round trip to five nodes room on a loaded
// 2-core machine running every package's tests under -race at once (1 s
// was seen to lose a Redlock lease whose renewal had not answered in time).
func (h *harness) ShortTTL() time.Duration { return 2 * time.Second }

func (h *harness) Close() {
	for _, c := range h.admin {
		c.Close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ps := range h.proxies {
		for _, p := range ps {
			p.Close()
		}
	}
}

// ForceLoss deletes the lock key, and a single node's shared holders,
// everywhere, as an operator would.
func (h *harness) ForceLoss(ctx context.Context, name string) error {
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	for _, c := range h.admin {
		if err := c.Del(ctx, k.lock, k.shared, k.tokens).Err(); err != nil {
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

// TestConformanceFairness runs the conformance suite on a single node with
// the Fairness that TestConformance does not use (the default's other).
func TestConformanceFairness(t *testing.T) {
	addrs := testserver.Redis(t)
	other := FIFO
	if defaultFairness == FIFO {
		other = Barging
	}
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		h := newHarness(addrs[:1])
		h.opts = &Options{Fairness: other}
		return h, nil
	})
}

func TestConformanceRedlock(t *testing.T) {
	addrs := testserver.Redis(t)
	drivertest.RunConformanceTests(t, func(context.Context, *testing.T) (drivertest.Harness, error) {
		return newHarness(addrs), nil
	})
}

// TestHarnessFaulter: the harness's faults reach the connections of the
// kind asked for, and only those.
func TestHarnessFaulter(t *testing.T) {
	h := newHarness(testserver.Redis(t)[:1])
	defer h.Close()
	ctx := context.Background()
	d, err := h.MakeDriver(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dd := d.(*Driver)
	// A waiter subscribes, so that the driver has a pub/sub connection.
	if _, err := dd.nodes[0].hub.join(ctx, dd.keysOf(uniqueName(t)).channel, newWaiter("probe")); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		kind    string
		blocked bool
	}{{"pubsub", false}, {"command", true}, {"", true}} {
		undo, err := h.Fault(d, tc.kind, drivertest.Fault{Stall: true})
		if err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		l, _, err := d.Acquire(tctx, driver.Request{Name: fmt.Sprintf("%s/%d", uniqueName(t), i), TTL: time.Second})
		cancel()
		undo()
		if err == nil {
			err = l.Release(ctx)
		}
		if blocked := err != nil; blocked != tc.blocked {
			t.Errorf("stall on %q connections: TryLock error %v, want blocked=%v", tc.kind, err, tc.blocked)
		}
	}
	if _, err := h.Fault(d, "watch", drivertest.Fault{}); err == nil {
		t.Error("Fault with an unknown kind succeeded")
	}
}
