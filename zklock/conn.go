package zklock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// Talking to go-zookeeper: its calls with a context, and what its errors
// mean for a caller.

// quiet drops go-zookeeper's log lines: connection churn is reported through
// errors and lease state, and the library would print server addresses and
// session ids on every reconnect.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// wrapErr returns ctx's error as itself and tags engine errors: those
// that may pass are marked driver.Unavailable, so that a blocking Lock
// retries them.
func (d *Driver) wrapErr(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return ctx.Err()
	}
	select {
	case <-d.closing:
		return driver.ErrClosed
	case <-d.connGone:
		if !errors.Is(err, errConnClosed) {
			return fmt.Errorf("zklock: %s: %w (%w)", what, errConnClosed, err)
		}
	default:
	}
	if errors.Is(err, errConnClosed) {
		return fmt.Errorf("zklock: %s: %w", what, err)
	}
	e := fmt.Errorf("zklock: %s: %w", what, err)
	if transient(err) {
		return driver.Unavailable(e)
	}
	return e
}

// connDropped reports whether err is the connection's failure, the session
// living on (go-zookeeper reconnects to it): a request sent again may pass.
func connDropped(err error) bool {
	return transient(err) && !errors.Is(err, zk.ErrSessionExpired) && !errors.Is(err, errSessionEnded)
}

// transient reports whether err may pass with the connection: no server
// reachable, the connection dropped (go-zookeeper reconnects), or the
// session expired (go-zookeeper makes a new one, and Acquire works on it).
// What the server decided (no auth, bad arguments, ...) is not.
func transient(err error) bool {
	for _, t := range []error{
		zk.ErrNoServer, zk.ErrConnectionClosed, zk.ErrSessionExpired, zk.ErrSessionMoved,
		errSessionEnded, errDisconnected, io.EOF, io.ErrUnexpectedEOF,
	} {
		if errors.Is(err, t) {
			return true
		}
	}
	// go-zookeeper hands a failed socket write to the request as it is
	// ("write tcp ...: connection reset by peer").
	var ne net.Error
	return errors.As(err, &ne)
}

// call runs fn, a go-zookeeper call (which takes no context), and returns
// when it completes or ctx is done, whichever is first. An abandoned call
// completes in the background: go-zookeeper answers every request, with
// ErrConnectionClosed at the latest when the connection drops or closes.
func call[T any](ctx context.Context, d *Driver, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if ctx.Done() == nil {
		return fn() // nothing to honour: spare the goroutine
	}
	ch := make(chan result, 1)
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		v, err := fn()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// children lists parent's children, honouring ctx.
func (d *Driver) children(ctx context.Context, parent string) ([]string, error) {
	return call(ctx, d, func() ([]string, error) {
		kids, _, err := d.conn.Children(parent)
		return kids, err
	})
}

// nodeStat is what Exists and ExistsW tell of a node, as the one value
// call returns.
type nodeStat struct {
	exists bool
	stat   *zk.Stat
	watch  <-chan zk.Event // ExistsW's; nil from Exists
}

// exists stats nodePath, honouring ctx; with watch it also arms a watch on
// the node (ExistsW), whether or not the node exists.
func (d *Driver) exists(ctx context.Context, nodePath string, watch bool) (nodeStat, error) {
	return call(ctx, d, func() (n nodeStat, err error) {
		if watch {
			n.exists, n.stat, n.watch, err = d.conn.ExistsW(nodePath)
		} else {
			n.exists, n.stat, err = d.conn.Exists(nodePath)
		}
		return n, err
	})
}
