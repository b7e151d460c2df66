// Package pglock is the PostgreSQL driver of dlock: session-level advisory
// locks with a real TTL, a strong fencing token, loss reported the moment
// the server ends the holder's session, read-write locks, and locks taken
// inside the transaction of the data they protect ([Tx]).
//
// With a pgx pool of your own, which the dlock client uses and leaves open:
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db.internal/app")
//	…
//	c, err := pglock.New(pool, nil, dlock.WithTTL(10*time.Second))
//
// or by URL, with a pool the driver makes and closes, after importing this
// package:
//
//	c, err := dlock.Open(ctx, "postgres://app@db.internal:5432/app?sslmode=verify-full")
//
// # URLs
//
//	postgres://[user[:password]@][host][:port][,...][/database][?param=value&...]
//	postgresql://… (the same)
//
// The URL is a libpq connection URI, read by pgx (pgxpool.ParseConfig):
// every libpq parameter pgx knows (sslmode, sslrootcert, connect_timeout,
// application_name, target_session_attrs, several hosts…) and pgxpool's
// own (pool_max_conns…) work as documented there, and so do the PG*
// environment variables and ~/.pgpass. One parameter is dlock's own and is
// not passed on:
//
//   - dlock_table: the table of fencing counters ([Options].Table),
//     "name" or "schema.name"; [DefaultTable] ("dlock_tokens") if absent.
//
// Environment variables, read when the URL is opened: DLOCK_PG_PASSWORD,
// the password when neither the URL nor PGPASSWORD/.pgpass gives one. No
// credential is ever logged or put in an error. dlock.Open connects and
// pings the server (within Open's deadline, or 5 s), so that a wrong
// address or password fails Open rather than the first lock.
//
// What the driver needs of its user: to connect, to create the token table
// (or find it made; a table made by an earlier version is given the
// columns it lacks), to read and write it (SELECT, INSERT, UPDATE), and to
// call the advisory-lock functions, which every user may.
//
// # Names and keys
//
// A lock name of any bytes maps to one key of PostgreSQL's 64-bit
// advisory-lock space ([Key]: the first 8 bytes, big-endian, of the name's
// SHA-256). Two names with the same key contend as one lock: safe (never
// two holders of one name), only a wait that was not needed, and with n
// names in use at once it happens with a probability of about n²/2⁶⁵.
// Advisory locks are per database: clients must connect to the same one.
// Programs that take advisory locks of their own with one bigint key share
// the key space; pg_advisory_lock(int, int) keys are a space of their own.
//
// # Sessions
//
// A session-level advisory lock belongs to the connection that took it and
// lives until it is unlocked or the connection ends, so the driver holds its
// locks on connections of its own, opened with the pool's configuration
// (and its BeforeConnect and AfterConnect hooks) and never returned to the
// pool (a pooled connection would carry its locks to its next user). Locks
// with the same TTL share a session: a try-lock takes an idle session of
// its TTL, else opens another while there are fewer than four (a statement
// holds its session for a round trip, so a few let statements run side by
// side), else queues on the least busy one; a session costs a connection,
// a server process and one goroutine of the driver however many locks it
// holds. Of the sessions left without a lock, one per TTL is kept for the
// next lock or wait, the others are closed (and an idle one is ended by
// the server after the TTL anyway).
//
//   - TryLock: one statement on a session, one round trip:
//     pg_try_advisory_lock(key) and, if granted, the key's row in the token
//     table (INSERT … ON CONFLICT (key) DO UPDATE SET token = token + 1 …
//     RETURNING token), which also takes the lease. The exclusive
//     try-locks made on one session at the same time (many names taken at
//     once) go out together, as renewals do: one statement for up to
//     1,000 keys, each key's try-lock, then, for those granted, each row
//     written as a single try writes it (the token counted while the lock
//     is held, in the statement that took it); the first at once, those
//     that come while it is in flight in the next. A key not granted falls
//     back to the caller's waiting path. A try whose caller gave up while
//     its statement was in flight is undone (its lease ended, its key
//     unlocked) once the statement has answered.
//   - Lock: the same statement with pg_advisory_lock(key), on a session
//     of its own while it waits, which then holds the lock and may take
//     others: the grant and its token in the round trip of the wait, and
//     its lease too if the lock was free. After a real wait the lease is
//     written by one more statement, once the grant has reached the
//     client: a client that gave up while cut off from the server leaves
//     its backend queued, and a lease written for it when its turn came
//     would hold its successors up for a TTL (TestZombieGrant). With a
//     spare session (one left without locks) the statement is sent at
//     once: one round trip if the lock is free, two after a wait; without
//     one, the try first, on a session the lock may share, and, if the
//     lock is taken, the wait on a new connection. The server queues the
//     statement and wakes it in queue order when the lock is its turn: no
//     polling. ctx ending cancels the statement through pgx (a
//     CancelRequest, so the server drops the queue entry at once), and the
//     session is closed, which frees anything it might have been granted
//     meanwhile. A backend whose client vanished leaves the queue within a
//     second (client_connection_check_interval, where the platform has it).
//   - Unlock: one statement on the lock's session, one round trip: the
//     lease ended in the key's row, then pg_advisory_unlock(key). The
//     releases of one session's locks made at the same time go out
//     together, as renewals do: one statement for up to 1,000 of them
//     (each lease ended if it is still this holder's, then each key
//     unlocked, each caller told whether its key was held), the first at
//     once, those that come while it is in flight in the next. Releasing
//     N locks at once is a few statements per session, not N queued on it.
//   - Renew: the renewals of one session's locks go out together, one
//     statement for up to 1,000 of them (each lease extended in its key's
//     row if it is still this holder's, checked entry by entry): the first
//     at once, those that come while it is in flight in the next
//     (driver.RenewCoalescer, driver.AsyncRenewer). The client schedules
//     its leases' renewals on a common grid, so a client holding N locks
//     sends a few statements per session per renewal interval, not N.
//
// An uncontended Lock+Unlock is two round trips, as pg_advisory_lock +
// pg_advisory_unlock are, but each of them a write transaction (the token,
// the lease), which the bare advisory lock is not: see BENCH_NOTES.md.
//
// # TTL
//
// Each session runs with idle_session_timeout set to its locks' TTL
// (PostgreSQL 14 and later): a holder that stops renewing is cut off by the
// server when the TTL has passed since its last statement, and its locks
// freed. A renewal is a statement on the lock's session (it extends the
// lease in the key's row, and restarts the server's timer of every lock on
// the session), and the validity is measured from the moment it was sent,
// as for every driver. After a real wait the validity runs from
// the send of the statement that writes the lease.
//
// Servers before 14 have no idle_session_timeout: there the TTL only bounds
// the holder's own view (the lease ends when renewals stop succeeding), and
// the server frees a silent holder's locks only when it sees the connection
// end: at once for a process that exits or crashes, after TCP keep-alive
// gives up (tcp_keepalives_*, two hours by default) for a vanished host.
//
// # Fencing
//
// The token is the key's counter row, incremented while the lock is held,
// right after it is granted, in the same statement (for a try and a
// blocking wait alike): it strictly increases in grant order
// (across exclusive and shared holders and [Tx]) and is durable (WAL), so
// it survives restarts and failover to a synchronous standby. A sequence
// would not do unless it had CACHE 1. The driver creates its table on
// first use (CREATE TABLE IF NOT EXISTS, serialized by a
// transaction-scoped advisory lock). Clients of the earlier version of
// this driver, which kept leases in a table of their own
// ("<table>_leases"), must not share a table with this one.
//
// # Loss
//
// While a session is idle a goroutine of the driver reads from its
// connection, so its end is seen at once and reported through the leases'
// Done: pg_terminate_backend, idle_session_timeout, a server shutdown or
// crash, a reset connection. The session keeps the locks it holds and
// reports each one's loss by a call (driver.LossNotifier), so a held lock
// costs no goroutine; a lock released before is not reported.
//
// With a logger (dlock.WithLogger) the client logs the driver's connection
// lost and restored (driver.ConnNotifier): lost when a session ends without
// the driver's asking (not for the server's idle_session_timeout, which
// ends a spare session in the normal course and a silent holder's on
// purpose) or a new one cannot be opened; restored when the driver next
// opens one, which it does for the next lock asked for (nothing reconnects
// in the background: without a session the driver holds nothing). The
// detail names the server's address and process and the reason, never the
// password. A silent network is left to the portable
// deadline (TTL − margin after the last renewal sent), which the server's
// idle_session_timeout never precedes.
//
// The server frees a session's locks the moment it sees the session end,
// which can be the very moment its holder learns of it (a reset of both
// ends of the connection, a terminated backend, a restart): the next
// waiter could then be granted the lock a moment before the holder's Done
// closes. So every lease is also noted in the key's row of the token table
// (the exclusive holder's server process and lease end; the readers'
// leases), written with the grant, extended by every renewal (server
// clock: the renewal's time + TTL) and ended by the release, in the
// statement that unlocks, before the unlock. A grant holds the lock, so
// the leases of its mode's rivals still in the row belong to holders that
// ended without releasing: the grant holds the lock unused until the last
// of them is over, renewing meanwhile, and only then returns. A vanished
// holder is replaced when its lease is surely over, at most the TTL after
// its last renewal; a clean release hands over at once. So does the
// Unlock of a lock whose session a reset ended under it (a blip): the
// holder is done with it (Done is closed before the release), so the
// release ends the lease in the row from a connection of the pool
// (owner-checked by process and token). While that lease ran nobody else
// could be granted the lock, so ending it is this owner's release: Unlock
// returns nil if the lease was still running, and reports the loss if it
// had run out or was not ours any more; only if that statement fails too
// does the next holder wait the lease out. (Reporting the loss after
// ending a running lease broke the driver contract — a release that
// reports ErrLockLost changed nothing — and the safety suite's
// postgres/reset-holder saw it: a grant before the "lost" lease's time.)
//
// The grant reads the row through ON CONFLICT … DO UPDATE, which in read
// committed updates the row's latest version whatever the statement's
// snapshot, and waits for a transaction writing it to end: a release whose
// unlock granted the lock has not committed yet when the next holder wakes,
// and the next holder waits for that commit on the row's lock, then sees
// the lease ended. So one statement does for a blocking wait too, although
// its snapshot predates the wait (the lease a waited grant writes next
// only extends the row it locked). The release's commit does not wait for
// the WAL flush (synchronous_commit off for it alone): a release lost in a
// crash only makes the next holder wait out the lease; grants and renewals
// commit as the server is configured.
//
// # Read-write locks
//
// RWMutex readers take pg_advisory_lock_shared. PostgreSQL's lock manager
// queues a shared request behind a waiting exclusive one, so writers are
// not starved; try-locks fail in that case too. Semaphores and elections
// are not offered (Capabilities; such requests fail with
// dlock.ErrNotSupported).
//
// # Transactions
//
// [Tx] takes pg_advisory_xact_lock inside the caller's own transaction and
// returns the token, counted in that transaction: the lock, the token and
// the writes it protects commit or roll back together. It does not wait
// out the lease of a session holder that vanished (it will not sleep
// inside the caller's transaction): its token is above that holder's, so
// writes that check tokens stay safe.
//
// # Listing
//
// The driver implements driver.Lister (dlock's Client.List): the locks of
// the database held or awaited now, from pg_locks, named through the token
// table, which keeps the name a key was first granted under. A name that
// was never granted is not listed while it is only awaited.
//
// # Limits
//
// Advisory locks live in the server's shared lock table, sized
// max_locks_per_transaction × (max_connections + max_prepared_transactions)
// (about 12,800 on defaults) and shared with every transaction's ordinary
// locks. When it is full the server refuses with "out of shared memory";
// the driver reports that at once, naming max_locks_per_transaction,
// rather than retrying.
//
// PgBouncer in transaction (or statement) pooling mode hands each
// transaction to any server connection: session-level locks then stay on
// connections other clients use, and idle_session_timeout applies to the
// wrong session. The driver notes its session's server process
// (pg_backend_pid) when it opens it and checks it with every grant and
// renewal: a change fails the call with an error naming the pooler
// (never ErrUnavailable), ends the session, and the leases on it are lost.
// It cannot catch a pooler that happens to keep the session on one server
// connection until then, and a lock granted on the wrong one stays there
// until the pooler closes it. Connect the driver to PostgreSQL directly,
// or through PgBouncer in session mode (which works: TestPgBouncer). [Tx]
// works through any mode.
//
// Advisory locks are not replicated: a failover to a standby loses them
// (the new primary has none), while the tokens survive. Clients reconnect
// to the new primary and lose their leases; the token order keeps fenced
// writes safe.
package pglock
