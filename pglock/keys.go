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
	create string // the token table, if missing

	// One round trip each: take the advisory lock ($1) and, if granted,
	// count the grant in the key's row of the token table, which returns
	// the token. The lock is taken before the row, in the same statement,
	// so tokens follow grant order.
	try, wait         string // exclusive
	tryShared, waitSh string // shared

	unlock, unlockShared string
	token                string // the key's last token, for Status
	addName              string // the name column, to a table made before it existed
}

func newQueries(table string) queries {
	t := ident(table)
	grant := func(lock string) string {
		return fmt.Sprintf(`WITH l AS (%s),
t AS (INSERT INTO %s AS c (key, token, name) SELECT $1, 1, $2::bytea FROM l WHERE l.ok
	ON CONFLICT (key) DO UPDATE SET token = c.token + 1 RETURNING c.token)
SELECT (SELECT ok FROM l), coalesce((SELECT token FROM t), 0), pg_backend_pid()`, lock, t)
	}
	return queries{
		create:       fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (key bigint PRIMARY KEY, token bigint NOT NULL, name bytea)`, t),
		addName:      fmt.Sprintf(`ALTER TABLE %s ADD COLUMN IF NOT EXISTS name bytea`, t),
		try:          grant(`SELECT pg_try_advisory_lock($1) AS ok`),
		wait:         grant(`SELECT true AS ok FROM pg_advisory_lock($1)`),
		tryShared:    grant(`SELECT pg_try_advisory_lock_shared($1) AS ok`),
		waitSh:       grant(`SELECT true AS ok FROM pg_advisory_lock_shared($1)`),
		unlock:       `SELECT pg_advisory_unlock($1)`,
		unlockShared: `SELECT pg_advisory_unlock_shared($1)`,
		token:        fmt.Sprintf(`SELECT token FROM %s WHERE key = $1`, t),
	}
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
