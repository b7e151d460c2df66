package etcdlock

import (
	"context"
	"strings"
	"time"

	"google.golang.org/grpc/connectivity"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/redact"
)

// Connection news for the client's log (driver.ConnNotifier). The etcd
// client keeps one gRPC connection to the cluster, balanced over its
// endpoints and re-established by itself; its state is what the driver's
// renewals, keep-alives and loss watch ride on. One goroutine per driver
// follows it (started by NotifyConn, so only for a client with a logger)
// and tells:
//   - lost, when no endpoint can be reached: the state goes to
//     TRANSIENT_FAILURE (connection attempts fail), or the connection was
//     closed and reconnecting has not made it READY within connGrace;
//   - restored, when it is READY again.
//
// gRPC retries with a backoff in between; only the changes between the two
// are told, not every attempt, and a connection closed and made anew at
// once (a reset, a server's GOAWAY) is not told. IDLE alone is not a loss:
// gRPC idles a connection that carried no RPC for a while. One endpoint of
// several going away is not told either: the connection stays READY on the
// others. A network that drops packets without closing the connection
// leaves it READY (the etcd client sends no keep-alive pings unless
// configured to): its leases' renewals fail and are logged lock by lock.

var _ driver.ConnNotifier = (*Driver)(nil)

// connGrace is how long a closed connection may take to be READY again
// before its loss is told.
const connGrace = time.Second

// NotifyConn arranges for f to be told of the changes of the driver's
// connection to etcd (driver.ConnNotifier). The goroutine that follows it
// ends at Close, or when the etcd client is closed.
func (d *Driver) NotifyConn(f func(up bool, detail string)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.connWatch {
		return
	}
	d.connWatch = true
	d.wg.Add(1)
	go d.watchConn(f)
}

// watchConn follows the gRPC connection's state until the driver or the
// etcd client closes, telling f of the changes. The connection starts as
// up: the client reached the cluster, or is about to (a new etcd client
// does not wait for it).
func (d *Driver) watchConn(f func(up bool, detail string)) {
	defer d.wg.Done()
	cc := d.cli.ActiveConnection()
	up := true
	var left time.Time // when connecting began, while up
	var down time.Time // when it was lost, while not up
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			left = time.Time{}
			if !up {
				up = true
				f(true, "connected to "+d.endpoints()+" after "+time.Since(down).Round(time.Millisecond).String()+" without a connection")
			}
		case connectivity.TransientFailure:
			if up {
				up, down = false, time.Now()
				f(false, "cannot reach "+d.endpoints()+": every connection attempt fails")
			}
		case connectivity.Shutdown:
			return // the etcd client was closed: its locks are reported lost
		case connectivity.Idle:
			left = time.Time{} // connecting starts anew, by itself or at the next RPC
		case connectivity.Connecting:
			if up && left.IsZero() {
				left = time.Now()
			}
		}
		wait, cancel := d.closeCtx, context.CancelFunc(func() {})
		if up && s == connectivity.Connecting {
			wait, cancel = context.WithDeadline(d.closeCtx, left.Add(connGrace))
		}
		changed := cc.WaitForStateChange(wait, s)
		cancel()
		switch {
		case d.closeCtx.Err() != nil:
			return
		case !changed: // still connecting after connGrace
			up, down = false, left
			f(false, "cannot reach "+d.endpoints()+": still connecting after "+connGrace.String())
		}
	}
}

// endpoints names the etcd client's endpoints without the user info a URL
// of them may carry, nor the client's password.
func (d *Driver) endpoints() string {
	eps := d.cli.Endpoints()
	for i, ep := range eps {
		scheme, rest, ok := strings.Cut(ep, "://")
		if !ok {
			scheme, rest = "", ep
		} else {
			scheme += "://"
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = rest[at+1:]
		}
		eps[i] = scheme + rest
	}
	return redact.Password(strings.Join(eps, ","), d.cli.Password)
}
