package etcdlock

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dlockio/dlock/driver"
)

var (
	// errClosed: this driver was closed.
	errClosed = fmt.Errorf("etcdlock: %w", driver.ErrClosed)
	// errClientClosed: the *clientv3.Client was closed under the driver by
	// its owner. Nothing will work again, so it is never ErrUnavailable.
	errClientClosed = errors.New("etcd client closed")
)

// engineErr is how the driver reports an error from the etcd client for a
// call made with ctx: marked driver.ErrUnavailable when it may pass (the
// portable layer retries a blocking Lock on those), as it is otherwise.
//
// Transient: the connection lost under a request (gRPC Unavailable), no
// leader, "request timed out", a leader change, too many requests, and one
// of the driver's own time bounds running out (a lease grant, a keep-alive,
// a release) while the caller's ctx is still live. Permanent, unmarked:
// permission denied, authentication failed, invalid arguments, a full
// database, a closed client or driver; and the caller's own ctx ending,
// which is the caller's doing.
func (d *Driver) engineErr(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrUnavailable), errors.Is(err, driver.ErrLockLost),
		errors.Is(err, driver.ErrClosed), errors.Is(err, errClientClosed):
		return err
	case d.cli.Ctx().Err() != nil:
		return fmt.Errorf("%w: %w", errClientClosed, err)
	case ctx.Err() != nil:
		return err
	case d.closeCtx.Err() != nil && isContextErr(err):
		return fmt.Errorf("%w: %w", errClosed, err)
	case transient(err):
		return driver.Unavailable(err)
	}
	return err
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// transient says whether err is one that may pass, the caller's context
// being live.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true // one of the driver's own bounds
	}
	var code codes.Code
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if s, ok := status.FromError(err); ok {
		code = s.Code()
	} else {
		return false
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded:
		// "no leader", "leader changed", "request timed out", "server
		// stopped", "unhealthy cluster", a connection lost or refused.
		return true
	case codes.ResourceExhausted: // but not "database space exceeded"
		return errors.Is(err, rpctypes.ErrTooManyRequests)
	case codes.FailedPrecondition:
		return errors.Is(err, rpctypes.ErrNotLeader)
	}
	return false
}
