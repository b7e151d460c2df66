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
// Its rows, one per key: key (the advisory-lock key, primary), token (the
// key's last token), name (the first name granted under the key, for List),
// and the leases on the key, which a successor of a holder that vanished
// waits out (see the package doc, Loss): holder and held_until (the
// exclusive holder's server process and the end of its lease in ms since
// the epoch, server clock; NULL once released), readers (the shared
// holders' leases: {"pid": [token, end ms]}) and wait_until (the latest end
// of a lease whose holder vanished).
const DefaultTable = "dlock_tokens"

// queries are the statements of one driver, made once for its token table.
//
// Every statement that grants, renews or releases touches one row, the
// key's, and takes its row lock: the grant's ON CONFLICT … DO UPDATE
// updates the latest version of the row whatever its snapshot (read
// committed), and waits for a release in flight to commit. So a grant sees
// every release committed before it, and every lease written before it,
// even in a statement whose snapshot is older than the grant (a blocking
// pg_advisory_lock): the lock and the token are one statement, one round
// trip, for a try and a wait alike, and so is the lease unless the
// statement waited (see lease below).
type queries struct {
	create, addColumns string

	// try, tryShared, wait, waitShared ($1 key, $2 name, $3 TTL in ms):
	// take the advisory lock and, if granted, count the grant in the
	// key's row, which returns the token, note the lease there, and say
	// how long (ms) the lease of a holder that ended without releasing
	// may still be believed held by it. The lock is taken before the row
	// is written, in the same statement, so tokens follow grant order.
	try, tryShared, wait, waitShared string

	// tryMany ($1 keys, $2 names, $3 TTLs in ms): try's exclusive grant
	// for many keys of one session in one statement (grant.go; a batch of
	// one sends try, simpler for the server): each key's
	// pg_try_advisory_lock, then, for those granted, the row written as
	// try writes it (rows in key order, as every statement that writes
	// several does); returns the server process and, for the keys granted,
	// their tokens and how long (ms) a vanished holder's lease may last.
	tryMany string
	// untryMany ($1 keys, $2 the session's server process): undo a
	// tryMany that failed or was cut short, whose outcome is unknown: the
	// leases this session wrote for the keys ended (none of its locks
	// holds them: they were reserved for the batch), then each key
	// unlocked.
	untryMany string

	// release, releaseShared ($1 key, $2 the session's server process,
	// $3 token): releaseMany for one lock, a simpler statement for the
	// server (the usual, uncontended case): the lease ended in the row,
	// then the unlock.
	release, releaseShared string
	// releaseMany ($1 keys, $2 tokens, $3 shared or not, $4 the
	// session's server process): for many locks of one session in one
	// statement (release.go), end each lease in its key's row if it is
	// still this holder's, then unlock each key; returns the keys the
	// session held. The rows are locked (in key order, as renewMany's)
	// before any key is unlocked: the next holder, granted at the unlock,
	// takes the row's lock and so waits for this statement to commit, and
	// sees the lease ended. The commit need not wait for the WAL flush: a
	// release lost in a crash only makes the next holder wait out the
	// lease.
	releaseMany string
	// endLease, endLeaseShared ($1 key, $2 the ended session's server
	// process, $3 token): end the lease in the row of a lock whose session
	// ended under it, from another connection, so that the next holder
	// does not wait it out; owner-checked as release is. Returns whether
	// the lease it ended was still running (no row: it was not ours).
	endLease, endLeaseShared string
	// unlock, unlockShared ($1 key): give up a lock whose granting
	// statement failed (and so wrote nothing).
	unlock, unlockShared string
	// renewMany ($1 keys, $2 tokens, $3 TTLs in ms, $4 shared or not,
	// $5 the session's server process): for many locks of one session in
	// one statement (batch.go), each lease's end, from now, if it is still
	// this holder's; returns the server process and the keys renewed.
	// Rows are locked in key order first, so that two sessions' batches
	// over readers of the same keys cannot deadlock.
	renewMany string
	// confirm, confirmShared ($1 key, $2 the session's server process, $3
	// token, $4 TTL in ms): the lease of a
	// grant that came after a wait (whose statement did not write it).
	confirm, confirmShared string
	token                  string // the key's last token, for Status
}

func newQueries(table string) queries {
	t := ident(table)
	const now = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`
	// A grant holds the lock in its mode, so the leases of that mode's
	// rivals that are still in the row belong to holders that no longer
	// hold it: they ended (or their session did) without releasing.
	grant := func(lock string, shared bool) string {
		insert := `(key, token, name, holder, held_until) SELECT $1, 1, $2::bytea, pg_backend_pid(),
	CASE WHEN l.lease THEN ` + now + ` + $3 END`
		set := `holder = excluded.holder, held_until = excluded.held_until, readers = NULL,
	wait_until = greatest(c.wait_until, c.held_until,
		(SELECT max((r.value->>1)::bigint) FROM jsonb_each(c.readers) r))`
		if shared {
			insert = `(key, token, name, readers) SELECT $1, 1, $2::bytea,
	CASE WHEN l.lease THEN jsonb_build_object(pg_backend_pid()::text, jsonb_build_array(1, ` + now + ` + $3)) END`
			// An exclusive lease still in the row is a vanished writer's;
			// readers whose leases are over are dropped.
			set = `held_until = NULL, wait_until = greatest(c.wait_until, c.held_until),
	readers = coalesce((SELECT jsonb_object_agg(r.key, r.value) FROM jsonb_each(c.readers) r
		WHERE (r.value->>1)::bigint > ` + now + `), '{}') || CASE WHEN excluded.readers IS NULL THEN '{}'
		ELSE jsonb_build_object(pg_backend_pid()::text, jsonb_build_array(c.token + 1, ` + now + ` + $3)) END`
		}
		return fmt.Sprintf(`WITH l AS (%s),
t AS (INSERT INTO %s AS c %s FROM l WHERE l.ok
	ON CONFLICT (key) DO UPDATE SET token = c.token + 1, %s
	RETURNING c.token, c.wait_until)
SELECT (SELECT ok FROM l), coalesce((SELECT token FROM t), 0), pg_backend_pid(),
	greatest(coalesce((SELECT wait_until FROM t), 0) - `+now+`, 0), (SELECT lease FROM l)`, lock, t, insert, set)
	}
	// lease: the lease is written with the grant, which it is unless the
	// statement had to wait: a client may be gone by the time a long wait
	// ends (a cancelled wait the server never heard of), and a lease
	// written for it would hold its successors up for a TTL; after a wait
	// the driver writes the lease in a statement of its own (confirm).
	const (
		try        = `SELECT pg_try_advisory_lock($1) AS ok, true AS lease`
		tryShared  = `SELECT pg_try_advisory_lock_shared($1) AS ok, true AS lease`
		wait       = `SELECT true AS ok, CASE WHEN pg_try_advisory_lock($1) THEN true ELSE (SELECT false FROM pg_advisory_lock($1)) END AS lease`
		waitShared = `SELECT true AS ok, CASE WHEN pg_try_advisory_lock_shared($1) THEN true
	ELSE (SELECT false FROM pg_advisory_lock_shared($1)) END AS lease`
	)
	release := func(set, owner, unlock string) string {
		return fmt.Sprintf(`WITH r AS (UPDATE %s SET %s WHERE key = $1 AND %s RETURNING 1)
SELECT %s($1), set_config('synchronous_commit', 'off', true) FROM (SELECT count(*) FROM r) n`, t, set, owner, unlock)
	}
	const (
		owner       = `holder = $2::integer AND token = $3::bigint AND held_until IS NOT NULL`
		ownerShared = `(readers->($2::integer::text)->>0)::bigint = $3::bigint`
	)
	return queries{
		create: fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (key bigint PRIMARY KEY, token bigint NOT NULL, name bytea,
	holder integer, held_until bigint, wait_until bigint, readers jsonb)`, t),
		addColumns: fmt.Sprintf(`ALTER TABLE %s ADD COLUMN IF NOT EXISTS name bytea, ADD COLUMN IF NOT EXISTS holder integer,
	ADD COLUMN IF NOT EXISTS held_until bigint, ADD COLUMN IF NOT EXISTS wait_until bigint,
	ADD COLUMN IF NOT EXISTS readers jsonb`, t),
		try: grant(try, false),
		untryMany: fmt.Sprintf(`WITH k AS MATERIALIZED (SELECT key FROM %[1]s WHERE key = ANY($1::bigint[]) ORDER BY key FOR NO KEY UPDATE),
u AS (UPDATE %[1]s AS c SET held_until = NULL FROM k WHERE c.key = k.key AND c.holder = $2::integer AND c.held_until IS NOT NULL RETURNING 1)
SELECT count(*) FILTER (WHERE pg_advisory_unlock(r.key)) FROM unnest($1::bigint[]) AS r(key), (SELECT count(*) FROM u) n`, t),
		tryMany: fmt.Sprintf(`WITH l AS MATERIALIZED (SELECT r.key, r.name, r.ttl, pg_try_advisory_lock(r.key) AS ok
	FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS r(key, name, ttl)),
t AS (INSERT INTO %s AS c (key, token, name, holder, held_until)
	SELECT key, 1, name, pg_backend_pid(), %s + ttl FROM l WHERE ok ORDER BY key
	ON CONFLICT (key) DO UPDATE SET token = c.token + 1, holder = excluded.holder, held_until = excluded.held_until,
	readers = NULL, wait_until = greatest(c.wait_until, c.held_until,
		(SELECT max((r.value->>1)::bigint) FROM jsonb_each(c.readers) r))
	RETURNING c.key, c.token, c.wait_until)
SELECT pg_backend_pid(), coalesce(array_agg(key), '{}'), coalesce(array_agg(token), '{}'),
	coalesce(array_agg(greatest(coalesce(wait_until, 0) - %s, 0)), '{}') FROM t`, t, now, now),
		tryShared:     grant(tryShared, true),
		wait:          grant(wait, false),
		waitShared:    grant(waitShared, true),
		unlock:        `SELECT pg_advisory_unlock($1)`,
		unlockShared:  `SELECT pg_advisory_unlock_shared($1)`,
		release:       release(`held_until = NULL`, owner, "pg_advisory_unlock"),
		releaseShared: release(`readers = readers - $2::integer::text`, ownerShared, "pg_advisory_unlock_shared"),
		releaseMany: fmt.Sprintf(`WITH r AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::boolean[]) AS r(key, token, shared)),
k AS MATERIALIZED (SELECT key FROM %[1]s WHERE key = ANY($1::bigint[]) ORDER BY key FOR NO KEY UPDATE),
u AS (UPDATE %[1]s AS c SET held_until = CASE WHEN r.shared THEN c.held_until END,
	readers = CASE WHEN r.shared THEN c.readers - $4::integer::text ELSE c.readers END
	FROM r WHERE c.key = r.key AND c.key IN (SELECT key FROM k) AND CASE WHEN r.shared
		THEN (c.readers->($4::integer::text)->>0)::bigint = r.token
		ELSE c.holder = $4::integer AND c.token = r.token AND c.held_until IS NOT NULL END
	RETURNING 1)
SELECT coalesce(array_agg(r.key) FILTER (WHERE CASE WHEN r.shared THEN pg_advisory_unlock_shared(r.key)
	ELSE pg_advisory_unlock(r.key) END), '{}'), set_config('synchronous_commit', 'off', true)
FROM r, (SELECT count(*) FROM u) n`, t),
		endLease: fmt.Sprintf(`WITH o AS (SELECT held_until > %[3]s AS live FROM %[1]s WHERE key = $1 AND %[2]s FOR UPDATE)
UPDATE %[1]s SET held_until = NULL FROM o WHERE key = $1 AND %[2]s RETURNING o.live`, t, owner, now),
		endLeaseShared: fmt.Sprintf(`WITH o AS (SELECT (readers->($2::integer::text)->>1)::bigint > %[3]s AS live FROM %[1]s WHERE key = $1 AND %[2]s FOR UPDATE)
UPDATE %[1]s SET readers = readers - $2::integer::text FROM o WHERE key = $1 AND %[2]s RETURNING o.live`, t, ownerShared, now),
		renewMany: fmt.Sprintf(`WITH r AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[]) AS r(key, token, ttl, shared)),
k AS MATERIALIZED (SELECT key FROM %[1]s WHERE key = ANY($1::bigint[]) ORDER BY key FOR NO KEY UPDATE),
u AS (UPDATE %[1]s AS c SET held_until = greatest(c.held_until, CASE WHEN NOT r.shared THEN %[2]s + r.ttl END),
	readers = CASE WHEN r.shared THEN jsonb_set(c.readers, ARRAY[$5::integer::text],
		jsonb_build_array(r.token, greatest((c.readers->($5::integer::text)->>1)::bigint, %[2]s + r.ttl))) ELSE c.readers END
	FROM r WHERE c.key = r.key AND c.key IN (SELECT key FROM k) AND CASE WHEN r.shared
		THEN (c.readers->($5::integer::text)->>0)::bigint = r.token
		ELSE c.holder = $5::integer AND c.token = r.token AND c.held_until IS NOT NULL END
	RETURNING c.key)
SELECT pg_backend_pid(), coalesce((SELECT array_agg(key) FROM u), '{}')`, t, now),
		confirm: fmt.Sprintf(`UPDATE %s SET held_until = %s + $4
	WHERE key = $1 AND holder = $2::integer AND token = $3::bigint RETURNING pg_backend_pid()`, t, now),
		confirmShared: fmt.Sprintf(`UPDATE %s SET readers = coalesce(readers, '{}') ||
	jsonb_build_object($2::integer::text, jsonb_build_array($3::bigint, %s + $4)) WHERE key = $1 RETURNING pg_backend_pid()`, t, now),
		token: fmt.Sprintf(`SELECT token FROM %s WHERE key = $1`, t),
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
