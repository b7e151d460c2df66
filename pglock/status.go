package pglock

import (
	"context"
	"fmt"

	"github.com/dlockio/dlock/driver"
)

// Status reads the lock's entries in pg_locks (holders and waiters of its
// advisory lock in this database, session- and transaction-scoped) and its
// last committed token (a holder by Tx shows its own once its transaction
// commits). TTLLeft is unknown (0): the server's idle timer is not visible.
func (d *Driver) Status(ctx context.Context, name string) (driver.Status, error) {
	if err := d.ensureTable(ctx); err != nil {
		return driver.Status{}, err
	}
	key := Key(name)
	var held, waiting, exclusive int
	var tok int64
	err := d.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted),
	count(*) FILTER (WHERE granted AND mode = 'ExclusiveLock'),
	coalesce((`+d.q.token+`), 0)
FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 1 AND classid::bigint = $2 AND objid::bigint = $3
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		key, int64(uint64(key)>>32), int64(uint32(key))).Scan(&held, &waiting, &exclusive, &tok)
	if err != nil {
		return driver.Status{}, fmt.Errorf("pglock: status: %w", d.engineErr(ctx, err))
	}
	st := driver.Status{Held: held > 0, Waiters: waiting, Holders: held}
	if st.Held {
		st.Token = uint64(tok)
		st.Mode = driver.Shared
		if exclusive > 0 {
			st.Mode = driver.Exclusive
		}
	}
	return st, nil
}
