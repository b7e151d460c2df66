package pglock

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dlockio/dlock/driver"
)

// Tx takes name's lock inside the caller's transaction tx, waiting for it,
// and returns its fencing token, counted in the same transaction. The lock
// is PostgreSQL's transaction-scoped advisory lock
// (pg_advisory_xact_lock): it is released when tx commits or rolls back,
// never before, so the writes it protects and the lock end together and no
// other holder's writes can interleave with them. It contends with the
// Mutex (and the RWMutex writer) of the same name on the same database.
//
// ctx ending cancels the wait (and, as for any statement of tx, aborts tx).
// The token table is DefaultTable, which a pglock client creates on first
// use (Driver.Tx uses a driver's own table).
func Tx(ctx context.Context, tx pgx.Tx, name string) (uint64, error) {
	return txLock(ctx, tx, name, DefaultTable)
}

// Tx is the package's Tx with the driver's token table.
func (d *Driver) Tx(ctx context.Context, tx pgx.Tx, name string) (uint64, error) {
	return txLock(ctx, tx, name, d.table)
}

func txLock(ctx context.Context, tx pgx.Tx, name, table string) (uint64, error) {
	if ctx == nil {
		return 0, driver.InvalidArgument("pglock.Tx: ctx", "<nil>", "a context")
	}
	if tx == nil {
		return 0, driver.InvalidArgument("pglock.Tx: tx", "<nil>", "a pgx.Tx")
	}
	if name == "" {
		return 0, driver.InvalidArgument("pglock.Tx: name", `""`, "a non-empty lock name")
	}
	var tok int64
	if err := tx.QueryRow(ctx, txQuery(table), Key(name), []byte(name)).Scan(&tok); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P01" {
			return 0, fmt.Errorf("pglock.Tx %q: the token table %s is missing (a pglock client creates it on first use): %w", name, table, err)
		}
		return 0, fmt.Errorf("pglock.Tx %q: %w", name, err)
	}
	return uint64(tok), nil
}
