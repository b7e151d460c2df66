package zklock

import (
	"context"
	"encoding/binary"
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
	"github.com/dlockio/dlock/internal/faultproxy"
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
	// session is the session timeout MakeDriver's drivers ask for; 0
	// follows the TTL (Dial without Options.SessionTimeout, as zk:// does).
	session  time.Duration
	borrowed bool // drivers made by New on a connection the harness owns
	// many, if set, is how many locks drivertest's ManyLocks holds.
	many int

	mu    sync.Mutex
	links map[driver.Driver]*link
}

var _ drivertest.Faulter = (*harness)(nil)

// ManyLocks implements drivertest.ManyLockser.
func (h *harness) ManyLocks() int {
	if h.many > 0 {
		return h.many
	}
	return drivertest.ManyLocks
}

func newHarness(ctx context.Context, t *testing.T) (drivertest.Harness, error) {
	return openHarness(t, testserver.ZooKeeper(t), 0, false)
}

func openHarness(t testing.TB, servers []string, session time.Duration, borrowed bool) (*harness, error) {
	admin, err := adminConn(servers)
	if err != nil {
		return nil, err
	}
	return &harness{servers: servers, admin: admin, session: session, borrowed: borrowed, links: map[driver.Driver]*link{}}, nil
}

func adminConn(servers []string) (*zk.Conn, error) {
	c, _, err := zk.Connect(servers, 10*time.Second, zk.WithLogger(quiet{}), zk.WithLogInfo(false))
	return c, err
}

func (h *harness) MakeDriver(ctx context.Context) (driver.Driver, error) {
	k, err := newLink(h.servers)
	if err != nil {
		return nil, err
	}
	o := Options{Prefix: testRoot, SessionTimeout: h.session, Dialer: k.dial}
	var d driver.Driver
	if h.borrowed {
		conn, events, cerr := zk.Connect(k.addrs(), h.session, zk.WithLogger(quiet{}), zk.WithLogInfo(false), zk.WithDialer(k.dial),
			zk.WithHostProvider(NewHostProvider()))
		if cerr != nil {
			k.close()
			return nil, cerr
		}
		k.conn = conn
		d, err = NewDriver(conn, events, &o)
	} else {
		d, err = dialAny(ctx, k.addrs(), o)
	}
	if err != nil {
		k.close()
		return nil, err
	}
	h.mu.Lock()
	h.links[d] = k
	h.mu.Unlock()
	return d, nil
}

// Close closes the admin connection and every driver's proxies; the suite
// closes its clients first.
func (h *harness) Close() {
	h.admin.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range h.links {
		k.close()
	}
}

func (h *harness) ShortTTL() time.Duration { return testSession }

// ForceLoss deletes the holder's node, as an operator would.
func (h *harness) ForceLoss(_ context.Context, name string) error {
	parent := testRoot + "/" + encodeName(name)
	// The admin session may be on another server than the holder's, which
	// may not have applied the grant yet: catch up with the leader first.
	if _, err := h.admin.Sync(parent); err != nil {
		return err
	}
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

func (h *harness) link(d driver.Driver) (*link, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.links[d]
	if k == nil {
		return nil, fmt.Errorf("zklock harness: driver %T was not made by MakeDriver", d)
	}
	return k, nil
}

// Crash resets the driver's TCP connections and refuses new ones: the
// session lives on at the server until its timeout, as after a process
// crash.
func (h *harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	k, err := h.link(d)
	if err != nil {
		return false, err
	}
	k.partition(true)
	return false, nil
}

// ConnKinds: a driver has one connection per session, so only the empty
// kind (all of them) is offered.
func (h *harness) ConnKinds() []string { return nil }

func (h *harness) Fault(d driver.Driver, kind string, f drivertest.Fault) (func(), error) {
	if kind != "" {
		return nil, fmt.Errorf("zklock harness: connection kind %q: want \"\" (a ZooKeeper session has one connection)", kind)
	}
	k, err := h.link(d)
	if err != nil {
		return nil, err
	}
	return faultproxy.Apply(k.proxies, faultproxy.Any, f), nil
}

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, newHarness)
}

// link is one driver's way to the servers: a fault proxy per server, and a
// dialer that can drop a connection right after a create request went out
// (a lost reply).
type link struct {
	proxies []*faultproxy.Proxy
	conn    *zk.Conn // a connection given to New, closed with the link

	mu          sync.Mutex
	down        func() // undoes partition(true)
	dropOnReply bool   // armed: lose the connection when the next create's reply comes
	// containerFault, if set, happens to the next container create
	// (opcode 19), once.
	containerFault containerFault
	creates        []string // the paths of the plain creates (opcode 1) sent
}

type containerFault int

const (
	noContainerFault containerFault = iota
	// containerLost: the request never reaches the server and the
	// connection drops (go-zookeeper answers ErrConnectionClosed).
	containerLost
	// containerUnknown: the request reaches the server with an opcode it
	// does not know, as a container create reaches a server before 3.5:
	// it answers UNIMPLEMENTED and closes the connection.
	containerUnknown
)

func newLink(servers []string) (*link, error) {
	k := &link{}
	for _, s := range servers {
		p, err := faultproxy.Start(s)
		if err != nil {
			k.close()
			return nil, err
		}
		k.proxies = append(k.proxies, p)
	}
	return k, nil
}

// addrs are the proxies' addresses, one per server, for zk.Connect.
func (k *link) addrs() []string {
	var a []string
	for _, p := range k.proxies {
		a = append(a, p.Addr())
	}
	return a
}

func (k *link) close() {
	if k.conn != nil {
		k.conn.Close()
	}
	for _, p := range k.proxies {
		p.Close()
	}
}

// partition cuts (on: connections reset, new ones refused) or heals (off)
// the driver's link to the servers.
func (k *link) partition(on bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case on && k.down == nil:
		k.down = faultproxy.Apply(k.proxies, faultproxy.Any, drivertest.Fault{Down: true})
	case !on && k.down != nil:
		k.down()
		k.down = nil
	}
}

// stall holds all of the driver's traffic (on) until called with off: a
// partition that TCP rides out.
func (k *link) stall() (undo func()) {
	return faultproxy.Apply(k.proxies, faultproxy.Any, drivertest.Fault{Stall: true})
}

func (k *link) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &dropConn{Conn: c, k: k}, nil
}

type dropConn struct {
	net.Conn
	k          *link
	createSent bool
}

const (
	opCreate          = 1
	opCreateContainer = 19
	opUnknown         = 99 // no ZooKeeper opcode
)

func (c *dropConn) Write(b []byte) (int, error) {
	if len(b) >= 12 && b[8] == 0 && b[9] == 0 && b[10] == 0 && b[11] == opCreateContainer {
		c.k.mu.Lock()
		f := c.k.containerFault
		c.k.containerFault = noContainerFault
		c.k.mu.Unlock()
		switch f {
		case containerLost:
			// Taken as written, never sent; the read loop sees the
			// connection close.
			c.Conn.Close()
			return len(b), nil
		case containerUnknown:
			b = append([]byte(nil), b...)
			b[11] = opUnknown
		}
	}
	// One Write per request: length, xid, opcode.
	if len(b) >= 12 && b[8] == 0 && b[9] == 0 && b[10] == 0 && b[11] == opCreate {
		c.k.mu.Lock()
		if len(b) >= 16 {
			if n := int(binary.BigEndian.Uint32(b[12:16])); n >= 0 && 16+n <= len(b) {
				c.k.creates = append(c.k.creates, string(b[16:16+n]))
			}
		}
		if c.k.dropOnReply {
			c.createSent = true
		}
		c.k.mu.Unlock()
	}
	return c.Conn.Write(b)
}

func (c *dropConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.k.mu.Lock()
	drop := c.createSent && c.k.dropOnReply
	if drop {
		c.k.dropOnReply = false
	}
	c.k.mu.Unlock()
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
