package redislock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
)

// errorf wraps an error of node n about key with what a reader needs, and
// marks it driver.Unavailable if it may pass (see transient).
func (n *node) errorf(key string, err error) error {
	var out error
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		out = fmt.Errorf("redislock: %s: %w", n.name, err)
	case errors.Is(err, redis.ErrClosed):
		out = fmt.Errorf("redislock: %s: the go-redis client was closed: %w", n.name, err)
	case isServerError(err) && strings.Contains(err.Error(), "WRONGTYPE"):
		out = fmt.Errorf("redislock: %s: key %q (or its fence counter) holds a value that is not a dlock lock: %w", n.name, key, err)
	case strings.Contains(err.Error(), "DLOCK"):
		out = fmt.Errorf("redislock: %s: key %q: %w", n.name, key, err)
	default:
		out = fmt.Errorf("redislock: %s: %w", n.name, err)
	}
	if transient(err) {
		return driver.Unavailable(out)
	}
	return out
}

// transientReplies start the server's error replies that may pass: a
// server loading its data, a cluster or replication being reconfigured, a
// node that became a replica in a failover, a busy script, memory or
// connections exhausted for now.
var transientReplies = []string{"LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "BUSY", "OOM",
	"NOREPLICAS", "ERR max number of clients"}

// transient reports whether err may pass: the network (refused, reset,
// timed out), the client's pool, or one of transientReplies. A client the
// user closed, a key of another type, a refused password or a bad
// configuration will not pass.
func transient(err error) bool {
	switch {
	case err == nil, errors.Is(err, redis.ErrClosed), errors.Is(err, context.Canceled):
		return false
	case isServerError(err):
		s := err.Error()
		for _, p := range transientReplies {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// permanent reports whether err will not pass: anything but a transient
// error or a cancelled context.
func permanent(err error) bool {
	return err != nil && !transient(err) && !errors.Is(err, context.Canceled)
}

// isServerError reports whether Redis answered with an error, as opposed to
// the request or its reply getting lost.
func isServerError(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}
