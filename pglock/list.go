package pglock

import (
	"context"
	"fmt"

	"github.com/dlockio/dlock/driver"
)

var _ driver.Lister = (*Driver)(nil)

// List reports the advisory locks of this database held or awaited now
// whose names start with prefix, with their holders and waiters, in the
// byte order of the names. Names come from the token table, which records
// a key's name at its first grant: a name never granted yet (only awaited)
// is not listed, and of two names that share a key only the first granted
// is.
func (d *Driver) List(ctx context.Context, prefix string) ([]driver.Listed, error) {
	if err := d.ensureTable(ctx); err != nil {
		return nil, err
	}
	rows, err := d.pool.Query(ctx, `SELECT t.name, count(*) FILTER (WHERE l.granted), count(*) FILTER (WHERE NOT l.granted),
	count(*) FILTER (WHERE l.granted AND l.mode = 'ExclusiveLock'), t.token
FROM pg_locks l JOIN `+ident(d.table)+` t ON t.key = (l.classid::bigint << 32) | l.objid::bigint
WHERE l.locktype = 'advisory' AND l.objsubid = 1
	AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND t.name IS NOT NULL AND substring(t.name FROM 1 FOR length($1::bytea)) = $1::bytea
GROUP BY t.key, t.name, t.token
ORDER BY t.name`, []byte(prefix))
	if err != nil {
		return nil, fmt.Errorf("pglock: list: %w", d.engineErr(ctx, err))
	}
	defer rows.Close()
	var out []driver.Listed
	for rows.Next() {
		var name []byte
		var held, waiting, exclusive int
		var tok int64
		if err := rows.Scan(&name, &held, &waiting, &exclusive, &tok); err != nil {
			return nil, fmt.Errorf("pglock: list: %w", err)
		}
		st := driver.Status{Held: held > 0, Waiters: waiting, Holders: held}
		if st.Held {
			st.Token = uint64(tok)
			st.Mode = driver.Shared
			if exclusive > 0 {
				st.Mode = driver.Exclusive
			}
		}
		out = append(out, driver.Listed{Name: string(name), Status: st})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pglock: list: %w", d.engineErr(ctx, err))
	}
	return out, nil
}
