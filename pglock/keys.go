package pglock

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Key returns the advisory-lock key of a lock name: the first 8 bytes of
// the name's SHA-256, read big-endian as a signed 64-bit integer (the
// bigint of pg_advisory_lock(bigint)). Names of any bytes map to it; two
// names with the same key contend as one lock (safe: never two holders of
// one name, only a wait that was not needed), which for n names in use at
// once happens with a probability of about n²/2⁶⁵.
//
// Key is exported so that SQL written by hand can name the same lock:
// SELECT pg_advisory_lock(key) takes what Mutex(name) takes.
func Key(name string) int64 {
	sum := sha256.Sum256([]byte(name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// DefaultTable is the table of fencing counters when Options.Table is empty.
// Its rows: key (the advisory-lock key, primary), token (the key's last
// token) and name (the first name granted under the key, for List).
const DefaultTable = "dlock_tokens"

// queries are the statements of one driver, made once for its token table.
type queries struct {
	create, createLeases, addName string

	// One round trip each: take the advisory lock ($1) and, if granted,
	// count the grant in the key's row of the token table, which returns
	// the token, and note the lease in the leases table; also how long
	// (ms) the lease of a holder that ended without releasing may still
	// be believed held by it. The lock is taken before the row, in the
	// same statement, so tokens follow grant order. held does the rest
	// for a lock taken by wait or waitShared (blocking statements).
	try, tryShared, held string
	wait, waitShared     string

	// release (a format: key, token) deletes the lease's row in a
	// transaction of its own, committed before unlock (a format: key)
	// frees the lock, so that the next holder never mistakes it for a
	// holder that vanished.
	release, unlock, unlockShared string
	renew                         string // the lease's validity, from now
	recheck                       string // the wait of the grant, with a fresh snapshot
	token                         string // the key's last token, for Status
}

func newQueries(table string) queries {
	t, lt := ident(table), ident(leasesTable(table))
	// holders: the sessions that hold the key now ($5, $6: its classid
	// and objid in pg_locks).
	const holders = `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
	AND classid::bigint = $5 AND objid::bigint = $6`
	grant := func(lock string) string {
		return fmt.Sprintf(`WITH l AS (%[1]s),
t AS (INSERT INTO %[2]s AS c (key, token, name) SELECT $1, 1, $2::bytea FROM l WHERE l.ok
	ON CONFLICT (key) DO UPDATE SET token = c.token + 1 RETURNING c.token),
r AS (INSERT INTO %[3]s (key, token, shared, pid, valid_until)
	SELECT $1, token, $4, pg_backend_pid(), clock_timestamp() + $3 * interval '1 millisecond' FROM t),
w AS (SELECT max(x.valid_until) AS until FROM l, %[3]s x WHERE l.ok AND x.key = $1
	AND (NOT $4 OR NOT x.shared) AND x.pid NOT IN (%[4]s)),
d AS (DELETE FROM %[3]s x USING l WHERE l.ok AND x.key = $1 AND x.valid_until < clock_timestamp()
	AND x.pid NOT IN (%[4]s))
SELECT (SELECT ok FROM l), coalesce((SELECT token FROM t), 0), pg_backend_pid(),
	coalesce(ceil(extract(epoch FROM (SELECT until FROM w) - clock_timestamp()) * 1000), 0)::bigint`, lock, t, lt, holders)
	}
	return queries{
		create: fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (key bigint PRIMARY KEY, token bigint NOT NULL, name bytea)`, t),
		createLeases: fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (key bigint NOT NULL, token bigint NOT NULL,
	shared boolean NOT NULL, pid integer NOT NULL, valid_until timestamptz NOT NULL, PRIMARY KEY (key, token))`, lt),
		addName:      fmt.Sprintf(`ALTER TABLE %s ADD COLUMN IF NOT EXISTS name bytea`, t),
		try:          grant(`SELECT pg_try_advisory_lock($1) AS ok`),
		tryShared:    grant(`SELECT pg_try_advisory_lock_shared($1) AS ok`),
		held:         grant(`SELECT true AS ok`),
		wait:         `SELECT pg_advisory_lock($1)`,
		waitShared:   `SELECT pg_advisory_lock_shared($1)`,
		unlock:       `SELECT pg_advisory_unlock(%d)`,
		unlockShared: `SELECT pg_advisory_unlock_shared(%d)`,
		release:      fmt.Sprintf(`BEGIN; DELETE FROM %s WHERE key = %%d AND token = %%d; COMMIT; `, lt),
		renew: fmt.Sprintf(`UPDATE %s SET valid_until = clock_timestamp() + $3 * interval '1 millisecond'
	WHERE key = $1 AND token = $2 RETURNING pg_backend_pid()`, lt),
		recheck: fmt.Sprintf(`SELECT coalesce(ceil(extract(epoch FROM max(x.valid_until) - clock_timestamp()) * 1000), 0)::bigint
	FROM %s x WHERE x.key = $1 AND x.token <> $2 AND (NOT $3 OR NOT x.shared) AND x.pid NOT IN (
	SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
	AND classid::bigint = $4 AND objid::bigint = $5)`, lt),
		token: fmt.Sprintf(`SELECT token FROM %s WHERE key = $1`, t),
	}
}

// leasesTable is the table of held leases beside the token table:
// "<table>_leases", in the same schema.
func leasesTable(table string) string {
	return table + "_leases"
}

// txQuery takes a transaction-scoped lock and counts it (Tx).
func txQuery(table string) string {
	return fmt.Sprintf(`WITH l AS (SELECT true AS ok FROM pg_advisory_xact_lock($1)),
t AS (INSERT INTO %s AS c (key, token, name) SELECT $1, 1, $2::bytea FROM l
	ON CONFLICT (key) DO UPDATE SET token = c.token + 1 RETURNING c.token)
SELECT token FROM t`, ident(table))
}

// ident quotes a table name, "table" or "schema.table".
func ident(table string) string {
	return pgx.Identifier(strings.Split(table, ".")).Sanitize()
}
