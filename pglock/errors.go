package pglock

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dlockio/dlock/driver"
)

var (
	// errClosed: this driver was closed.
	errClosed = fmt.Errorf("pglock: %w", driver.ErrClosed)
	// errRetired: a session closed because its group had another spare.
	errRetired = errors.New("pglock: spare session closed")
)

// engineErr is how the driver reports an error from the server for a call
// made with ctx: marked driver.ErrUnavailable when it may pass (the
// portable layer retries a blocking Lock on those), as it is otherwise.
//
// Transient: a connection that could not be made or broke (a session that
// ended under a request), a server shutting down or starting, too many
// connections, a serialization failure, a timeout of the driver's own.
// Permanent, unmarked: permission denied, a bad table name, the server's
// lock table full (it needs max_locks_per_transaction raised: retrying
// would hide that), and the caller's own ctx ending.
func (d *Driver) engineErr(ctx context.Context, err error) error {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrUnavailable), errors.Is(err, driver.ErrLockLost), errors.Is(err, driver.ErrClosed):
		return err
	case ctx.Err() != nil:
		return err
	case d.closeCtx.Err() != nil:
		return fmt.Errorf("%w: %w", errClosed, err)
	case errors.As(err, &pe):
		switch pe.Code {
		case "53200": // out_of_shared_memory: the lock table is full
			return fmt.Errorf("the server's lock table is full (advisory locks share it: max_locks_per_transaction × "+
				"(max_connections + max_prepared_transactions) entries; raise max_locks_per_transaction): %w", err)
		case "53300", "57P01", "57P02", "57P03", "40001", "40P01", "57014", "55P03":
			// too many connections, admin/crash shutdown, cannot connect
			// now, serialization failure, deadlock, a stray cancellation,
			// lock not available
			return driver.Unavailable(err)
		}
		if len(pe.Code) == 2+3 && pe.Code[:2] == "08" { // connection exception
			return driver.Unavailable(err)
		}
		return err
	case errors.Is(err, errSessionEnded), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return driver.Unavailable(err)
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return driver.Unavailable(err)
	}
	return err
}
