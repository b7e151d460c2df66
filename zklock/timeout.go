package zklock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// The session timeout the server grants, rather than the one asked for,
// is what bounds a lock's life: the server clamps the request to
// [minSessionTimeout, maxSessionTimeout] (2 and 20 ticks by default), and
// go-zookeeper v1.0.4 keeps the granted value to itself. The driver learns
// it in one of two ways:
//
//   - On a connection it dials (Dial, Open), from the connect response
//     itself: the first frame the server sends on every new TCP connection
//     carries the granted timeout. grantConn reads it on its way to
//     go-zookeeper, before go-zookeeper reports the session, so the value is
//     current on every reconnect.
//   - On a connection given to New, by probing: a short-lived session of its
//     own, asked for the same timeout, with the server the connection uses;
//     again whenever that connection moves to another server. The server
//     grants a probe what it granted the connection (and go-zookeeper asks
//     for the last granted value on a reconnect, so the smallest value seen
//     is the one in force).

// grantConn passes a connection through and reads the server's connect
// response at its head.
type grantConn struct {
	net.Conn
	granted func(time.Duration)
	head    []byte // the response's first bytes, until parsed
	done    bool
}

// connectHead is what grantConn reads of a connect response: length,
// protocol version, timeout (ms), session id.
const connectHead = 4 + 4 + 4 + 8

func (c *grantConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.done && n > 0 {
		c.head = append(c.head, b[:min(n, connectHead-len(c.head))]...)
		if len(c.head) == connectHead {
			c.done = true
			ms := int32(binary.BigEndian.Uint32(c.head[8:12]))
			sid := int64(binary.BigEndian.Uint64(c.head[12:20]))
			if sid != 0 && ms > 0 { // sid 0: the session expired, nothing was granted
				c.granted(time.Duration(ms) * time.Millisecond)
			}
			c.head = nil
		}
	}
	return n, err
}

// grantDialer wraps dial so that each connection reports the timeout the
// server grants, before go-zookeeper sees the response.
func grantDialer(dial zk.Dialer, granted func(time.Duration)) zk.Dialer {
	return func(network, addr string, timeout time.Duration) (net.Conn, error) {
		c, err := dial(network, addr, timeout)
		if err != nil {
			return nil, err
		}
		return &grantConn{Conn: c, granted: granted}, nil
	}
}

// grantState is what a driver knows of its session timeout.
type grantState struct {
	asked   time.Duration
	granted atomic.Int64 // ns; 0 until known
	known   chan struct{}
	once    sync.Once

	// For a borrowed connection: the probes.
	probeMu     sync.Mutex
	probedAt    string        // server of the last probe started
	lastProbe   error         // the last probe's failure, if it failed
	probeFailed chan struct{} // closed (and replaced) when a probe fails
	probeDialer zk.Dialer
}

// setGranted records a granted timeout. On a dialed connection each value
// is the current one; a probe's value counts only if smaller, as the
// connection asks for its last granted value on a reconnect.
func (d *Driver) setGranted(g time.Duration) {
	d.grant.granted.Store(int64(g))
	d.grant.once.Do(func() { close(d.grant.known) })
}

func (d *Driver) lowerGranted(g time.Duration) {
	for {
		old := d.grant.granted.Load()
		if old != 0 && old <= int64(g) {
			break
		}
		if d.grant.granted.CompareAndSwap(old, int64(g)) {
			break
		}
	}
	d.grant.once.Do(func() { close(d.grant.known) })
}

// ttl is the session timeout in force: the granted one once known.
func (d *Driver) ttl() time.Duration {
	if g := d.grant.granted.Load(); g > 0 {
		return time.Duration(g)
	}
	return d.grant.asked
}

// probeWait bounds how long a probe, and an Acquire waiting for the first
// one, may take before the servers are reported unavailable.
const probeWait = 5 * time.Second

// awaitGrant waits until the granted timeout is known: no lock is reported
// with a validity the server may not honour. While it is not known (a
// borrowed connection whose probe fails), Acquire fails with a transient
// error, at once if a probe has failed already.
func (d *Driver) awaitGrant(ctx context.Context) error {
	select {
	case <-d.grant.known:
		return nil
	default:
	}
	if !d.owned {
		d.probeAfterConnect() // in case no event has started one (New with events = nil)
	}
	d.grant.probeMu.Lock()
	last, failed := d.grant.lastProbe, d.grant.probeFailed
	d.grant.probeMu.Unlock()
	if last == nil {
		t := time.NewTimer(probeWait)
		defer t.Stop()
		select {
		case <-d.grant.known:
			return nil
		case <-failed:
			d.grant.probeMu.Lock()
			last = d.grant.lastProbe
			d.grant.probeMu.Unlock()
		case <-t.C:
			last = errors.New("no answer yet")
		case <-ctx.Done():
			return ctx.Err()
		case <-d.closing:
			return driver.ErrClosed
		case <-d.connGone:
			return errConnClosed
		}
	}
	select {
	case <-d.grant.known: // a probe succeeded meanwhile
		return nil
	default:
	}
	return driver.Unavailable(fmt.Errorf("zklock: the session timeout the server grants is not known yet: %w", last))
}

// timeoutNote says, for Capabilities, which session timeout is in force.
func (d *Driver) timeoutNote() string {
	asked, granted := d.grant.asked, time.Duration(d.grant.granted.Load())
	switch {
	case granted == 0:
		return fmt.Sprintf("session timeout %v asked, not yet granted", asked)
	case granted < asked:
		return fmt.Sprintf("session timeout %v granted, below the %v asked (the server's maxSessionTimeout): "+
			"a lock lives at most %v without an answer, and that is its lease's TTL", granted, asked, granted)
	case granted > asked:
		return fmt.Sprintf("session timeout %v granted, above the %v asked (the server's minSessionTimeout): "+
			"a cut-off holder's lock is freed only after %v", granted, asked, granted)
	}
	return fmt.Sprintf("session timeout %v granted as asked", granted)
}

// probeAfterConnect starts a probe of the server a borrowed connection now
// uses, unless that server was probed already. It must not block: it runs
// from the connection's event handling.
func (d *Driver) probeAfterConnect() {
	c := d.connP.Load()
	if c == nil {
		return
	}
	server := c.Server()
	d.grant.probeMu.Lock()
	if server == "" || server == d.grant.probedAt {
		d.grant.probeMu.Unlock()
		return
	}
	d.grant.probedAt = server
	d.grant.probeMu.Unlock()
	select {
	case <-d.closing:
		return
	case <-d.done.Done():
		return
	default:
	}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.probe(server)
	}()
}

// probe learns the timeout server grants to d.grant.asked, retrying with
// backoff until it does, or the driver closes, or the connection is gone.
func (d *Driver) probe(server string) {
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), probeWait)
		stop := context.AfterFunc(d.done, cancel)
		go func() {
			select {
			case <-d.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		g, err := probeGranted(ctx, server, d.grant.asked, d.grant.probeDialer)
		stop()
		cancel()
		if err == nil {
			d.lowerGranted(g)
		}
		d.grant.probeMu.Lock()
		d.grant.lastProbe = err
		if err != nil {
			close(d.grant.probeFailed)
			d.grant.probeFailed = make(chan struct{})
		}
		d.grant.probeMu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-d.done.Done():
			return
		case <-d.closing:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// probeGranted opens a session with server, asking for asked, and returns
// the timeout granted; the session is closed at once.
func probeGranted(ctx context.Context, server string, asked time.Duration, dial zk.Dialer) (time.Duration, error) {
	var granted atomic.Int64
	session := make(chan struct{})
	failed := make(chan struct{}) // a connection attempt ended without a session
	var sessionOnce, failedOnce sync.Once
	attempts := 0 // the callback runs on go-zookeeper's one connecting goroutine
	conn, _, err := zk.Connect([]string{server}, asked,
		zk.WithLogger(quiet{}), zk.WithLogInfo(false),
		zk.WithDialer(grantDialer(dial, func(g time.Duration) { granted.Store(int64(g)) })),
		zk.WithEventCallback(func(ev zk.Event) {
			if ev.Type != zk.EventSession {
				return
			}
			switch ev.State {
			case zk.StateHasSession:
				sessionOnce.Do(func() { close(session) }) // after the grant was read, in the same goroutine
			case zk.StateConnecting:
				if attempts++; attempts > 1 {
					failedOnce.Do(func() { close(failed) })
				}
			}
		}))
	if err != nil {
		return 0, fmt.Errorf("zklock: probe the session timeout %s grants: %w", server, err)
	}
	defer conn.Close()
	select {
	case <-session:
		return time.Duration(granted.Load()), nil
	case <-failed:
		return 0, fmt.Errorf("zklock: probe the session timeout %s grants: %w", server, zk.ErrNoServer)
	case <-ctx.Done():
		return 0, fmt.Errorf("zklock: probe the session timeout %s grants: %w", server, ctx.Err())
	}
}
