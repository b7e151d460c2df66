package redislock

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/redact"
)

var _ driver.ConnNotifier = (*Driver)(nil)

// NotifyConn implements driver.ConnNotifier, for each node on its own: a
// node is lost when a request to it (the driver's or the application's on
// the same client) fails with a network error, a connection to it cannot
// be dialled, or the waiters' pub/sub connection to it dropped; it is back
// when it answers a request again (a renewal, an attempt, the waiters'
// resubscription), so a node nobody sends anything is told back with the
// next request. detail names the node by its address and says why; it never
// holds the client's password. NotifyConn adds a go-redis hook to each
// node's client, which does nothing once the driver is closed (go-redis
// cannot remove a hook).
func (d *Driver) NotifyConn(f func(up bool, detail string)) {
	for _, n := range d.nodes {
		w := &connWatch{name: n.name, password: clientPassword(n.rdb), closed: &d.closed, note: f}
		n.hub.setConn(w)
		n.rdb.AddHook(w)
	}
}

// connWatch follows one node's connection for NotifyConn; it is the
// go-redis hook on the node's client.
type connWatch struct {
	name     string
	password string // scrubbed from details, should an error carry it
	closed   *atomic.Bool
	note     func(up bool, detail string)

	down atomic.Bool // written under mu
	mu   sync.Mutex
	// changed is when the request that told the last change began: news
	// from a request begun before it is stale (a reply to a request sent
	// before an outage must not tell the node back).
	changed time.Time
}

// tell passes up to note if it changes the node's state and is news from
// a request begun at start or later than the last change; the detail names
// the node and says why (err's text, if why is empty).
func (w *connWatch) tell(start time.Time, up bool, why string, err error) {
	if w.closed.Load() || w.down.Load() == !up {
		return // the driver's own doing, or no change (every request's fast path)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.down.Load() == !up || start.Before(w.changed) {
		return
	}
	w.down.Store(!up)
	w.changed = start
	if why == "" {
		why = err.Error()
	}
	w.note(up, redact.Password(w.name+": "+why, w.password))
}

func (w *connWatch) lost(start time.Time, err error) {
	w.tell(start, false, "", err)
}

func (w *connWatch) answered(start time.Time) {
	w.tell(start, true, "answers again", nil)
}

// outcome tells what a request begun at start that ended with err says
// of the node: an answer (a reply, even an error reply) or a network error
// that ctx's own end did not cause. Anything else says nothing.
func (w *connWatch) outcome(ctx context.Context, start time.Time, err error) {
	switch {
	case err == nil || errors.Is(err, redis.Nil) || isServerError(err):
		w.answered(start)
	case ctxEnded(ctx):
	case isNetworkError(err):
		w.lost(start, err)
	}
}

// pubsubReconnected is the hub's news that its pub/sub connection was
// dropped and made again (a resubscription on a new connection) after its
// last sign of life at last: the drop is told, unless the node's state has
// changed since last (the outage that dropped it was told), then the answer.
func (w *connWatch) pubsubReconnected(last time.Time) {
	now := time.Now()
	w.tell(last, false, "the waiters' pub/sub connection dropped", nil)
	w.answered(now)
}

// DialHook implements redis.Hook: a connection that cannot be dialled
// loses the node. (A dial that succeeds is not yet an answer.)
func (w *connWatch) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := time.Now()
		c, err := next(ctx, network, addr)
		if err != nil && !ctxEnded(ctx) {
			w.lost(start, err)
		}
		return c, err
	}
}

// ProcessHook implements redis.Hook.
func (w *connWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		w.outcome(ctx, start, err)
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (w *connWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		w.outcome(ctx, start, err)
		return err
	}
}

// ctxEnded reports whether ctx has ended, or its deadline passed (a
// client that keeps deadlines itself may fail a request with an i/o timeout
// a moment before ctx notices): the caller's doing, not the node's.
func ctxEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// isNetworkError reports whether err says the connection failed (refused,
// reset, closed by the server, timed out), not the client's closing.
func isNetworkError(err error) bool {
	if errors.Is(err, redis.ErrClosed) || errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// clientPassword is the password c authenticates with, "" if none or
// unknown.
func clientPassword(c redis.UniversalClient) string {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().Password
	case *redis.ClusterClient:
		return c.Options().Password
	case *redis.Ring:
		return c.Options().Password
	}
	return ""
}
