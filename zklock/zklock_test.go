package zklock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSession is short so that expiry tests run in seconds (the test
// servers run tickTime=500, which allows sessions down to 1 s), but longer
// than the largest safety margin the suite asks for (TTL 30 s / 10): the
// portable layer takes the margin from the asked TTL, while a ZooKeeper
// lock's validity is the session timeout.
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
