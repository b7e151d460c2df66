package zklock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSession is short so that expiry tests run in seconds (the test
// servers run tickTime=500, which allows sessions down to 1 s) and long
// enough not to expire on a loaded 2-core machine.
const testSession = 4 * time.Second

const testRoot = "/dlocktest"

type harness struct {
	servers []string
	admin   *zk.Conn

	mu      sync.Mutex
	proxies map[*zkDriver]*proxy
}

func newHarness(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
	return openHarness(t, testserver.ZooKeeper(t))
}

func openHarness(t testing.TB, servers []string) (*harness, error) {
	admin, err := adminConn(servers)
	if err != nil {
		return nil, err
	}
	return &harness{servers: servers, admin: admin, proxies: map[*zkDriver]*proxy{}}, nil
}

func adminConn(servers []string) (*zk.Conn, error) {
	c, _, err := zk.Connect(servers, 10*time.Second, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	return c, err
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Driver, error) {
	p := &proxy{}
	d, err := dialDriver(ctx, h.servers, Options{Root: testRoot, SessionTimeout: testSession, Dialer: p.dial})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.proxies[d] = p
	h.mu.Unlock()
	return d, nil
}

func (h *harness) Close() { h.admin.Close() }

func (h *harness) ShortTTL() time.Duration { return testSession }

// ForceLoss deletes the holder's node, as an operator would.
func (h *harness) ForceLoss(_ context.Context, name string) error {
	parent := testRoot + "/" + encodeName(name)
	kids, _, err := h.admin.Children(parent)
	if err != nil {
		return err
	}
	q := queue(kids)
	if len(q) == 0 {
		return fmt.Errorf("%s: no holder", parent)
	}
	return h.admin.Delete(parent+"/"+q[0].name, -1)
}

// Crash cuts the driver's TCP connections and refuses new ones: the session
// lives on at the server until its timeout, as after a process crash.
func (h *harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	h.mu.Lock()
	p := h.proxies[d.(*zkDriver)]
	h.mu.Unlock()
	p.partition(true)
	return false, nil
}

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, newHarness)
}

// proxy sits between a driver and the servers: a dialer that can cut every
// connection it made (a partition) and drop a connection right after a
// create request went out (a lost reply).
type proxy struct {
	mu          sync.Mutex
	cut         bool
	conns       []net.Conn
	dropOnReply bool // armed: lose the connection when the next create's reply comes
}

func (p *proxy) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return nil, errors.New("proxy: partitioned")
	}
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	pc := &proxyConn{Conn: c, p: p}
	p.conns = append(p.conns, pc)
	return pc, nil
}

// partition cuts (on) or heals (off) the driver's link to the servers.
func (p *proxy) partition(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = on
	if on {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

type proxyConn struct {
	net.Conn
	p          *proxy
	createSent bool
}

const opCreate = 1

func (c *proxyConn) Write(b []byte) (int, error) {
	// One Write per request: length, xid, opcode.
	if len(b) >= 12 && b[8] == 0 && b[9] == 0 && b[10] == 0 && b[11] == opCreate {
		c.p.mu.Lock()
		if c.p.dropOnReply {
			c.createSent = true
		}
		c.p.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *proxyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.p.mu.Lock()
	drop := c.createSent && c.p.dropOnReply
	if drop {
		c.p.dropOnReply = false
	}
	c.p.mu.Unlock()
	if drop {
		c.Conn.Close()
		return 0, errors.New("proxy: connection dropped after create")
	}
	return n, err
}

// TestURLDefaultTTL: a zk:// client with the portable default TTL (15 s),
// longer than the session timeout, holds and renews across a few renewal
// intervals: the portable layer scales its margin to the granted window.
func TestURLDefaultTTL(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "zk://" + strings.Join(servers, ",") + testRoot + "?session_timeout=1500ms"
	c, err := dlock.Open(ctx, url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	l, err := c.Mutex("zkurl/" + newGUID()[:8]).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	// The renew interval becomes (1.5 s - scaled margin) / 3 < 0.5 s: several
	// renewals happen within the window below, and the lease must live on.
	select {
	case <-l.Done():
		t.Fatalf("lease lost with the default TTL: %v", l.Err())
	case <-time.After(2 * time.Second):
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}
