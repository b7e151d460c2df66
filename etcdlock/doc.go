// Package etcdlock is the etcd driver of dlock: a fair (FIFO) queue of keys
// ordered by create revision, bound to a lease, with the revision as a
// strong fencing token. It offers mutexes, read-write locks, semaphores and
// leader elections, all on that queue.
//
// With an etcd client of your own, which the dlock client uses and leaves
// open:
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"10.0.0.1:2379"}})
//	…
//	c, err := etcdlock.New(cli, &etcdlock.Options{Prefix: "myapp/locks"}, dlock.WithTTL(10*time.Second))
//
// or by URL, with a client the driver makes and closes, after importing this
// package:
//
//	c, err := dlock.Open(ctx, "etcd://10.0.0.1:2379,10.0.0.2:2379/myapp/locks")
//
// # URLs
//
//	etcd://[user[:password]@]host[:port][,host[:port]...][/prefix]
//	etcds://[user[:password]@]host[:port][,host[:port]...][/prefix]
//
// The parts:
//
//   - Scheme: [Scheme] ("etcd") speaks plain gRPC, [TLSScheme] ("etcds")
//     gRPC over TLS 1.2 or later, checking the servers' certificates against
//     the system's CAs, or those of DLOCK_ETCD_CACERT.
//   - Hosts: the client endpoints of the cluster's members, separated by
//     commas; a host without a port gets [DefaultPort] (2379). The etcd
//     client balances requests over them and fails over between them.
//   - Path: the key prefix ([Options].Prefix) without its leading and
//     trailing slashes; [DefaultPrefix] ("dlock") if empty.
//   - User info: the user and password of etcd's authentication. They take
//     precedence over the environment.
//   - No query parameters and no fragment: a URL with either is refused
//     (dlock.ErrInvalidArgument).
//
// Environment variables, read when the URL is opened:
//
//   - DLOCK_ETCD_USERNAME, DLOCK_ETCD_PASSWORD: the credentials, when the
//     URL has no user info. DLOCK_ETCD_USER, their former name, is still
//     read when DLOCK_ETCD_USERNAME is not set (deprecated).
//   - DLOCK_ETCD_CACERT: a PEM file of the CAs to trust for etcds://.
//
// No credential is ever logged or put in an error. dlock.Open connects
// (authenticating, if there are credentials) and reads one key, the prefix
// itself, so that a wrong address or password fails Open rather than the
// first lock; each of the two steps gives up by Open's deadline, or after
// 5 s.
//
// What the driver assumes of etcd: a quorum of members (the keys, their
// revisions and the leases are the cluster's, and only a majority grants
// or renews them), and, with authentication on, a user who may read and
// write the keys under <prefix>/, which is all the driver needs (the
// package's tests lock and unlock as such a user).
//
// # Keys
//
// A lock name N owns the key range <prefix>/<escaped N>/, in which each
// waiter and each holder has one key, bound to a lease of the driver, whose
// value is empty but for an election candidate's (its value). The key's
// name says what it waits for or holds:
//
//	<prefix>/<escaped N>/<lease id, hex>-<sequence number>          a writer: a Mutex, an RWMutex's Lock, an Election's candidate
//	<prefix>/<escaped N>/r/<lease id, hex>-<sequence number>        a reader: an RWMutex's RLock
//	<prefix>/<escaped N>/s<n>/<lease id, hex>-<sequence number>     one of n permits: Semaphore(N, n)
//
// Names are escaped by the escaper every driver shares: every byte but
// [A-Za-z0-9_-] becomes %XX, so that "a" and "a/b" own separate ranges; etcd
// keys need no length limit. Builds of dlock from before this escaper kept
// '.' and '~' as they are: a lock whose name holds either, taken by such a
// build, lives under another key and is not seen by this one (nor this
// one's by it). Other names map to the same keys as before. A writer's key
// is the one a mutex has always had; a build from before read-write locks
// takes readers' and permits' keys for writers', and waits for them.
//
// # How a lock is kept in etcd
//
// A waiter creates its key in one transaction that also reads the newest
// keys that may keep it out. Keys are ordered by create revision, and a
// key is let in when, among the keys created before it:
//
//   - a writer's: there is none (of any kind);
//   - a reader's: there is no writer's, held or waiting, so readers share
//     with readers, and readers that come after a waiting writer queue
//     behind it (no writer starvation);
//   - a permit's: there are fewer than n (the first n keys hold).
//
// A writer or a reader that is kept out watches only the nearest key that
// keeps it out (a writer the key just ahead, a reader the last writer
// ahead; no thundering herd) and, when it goes, re-reads its own key and
// what is ahead of it. A permit's waiter, any of whose holders may leave
// first, reads the permit keys ahead of it once, watches its limit's keys
// for deletions and counts them down, reading again only when its watch
// is made anew or its own key goes. A waiter whose key vanished (its lease
// expired, an operator deleted it), which the driver's loss watch or its
// next re-read tells it, returns an error matching dlock.ErrLockLost
// instead of waiting forever (unlike concurrency.Mutex, etcd#19597); one
// that waits keeps the
// lease alive itself and checks it every TTL/3 (concurrency's RWMutex
// recipe does not, etcd#16221). The token is the key's create revision,
// linearizable and monotonic cluster-wide, one sequence per name for
// writers, readers and permits. Release and renewal compare that create
// revision and the key's lease, so they never touch a later holder's key (unlike
// concurrency.Mutex.Unlock, etcd#22082). Loss is reported per lock, not per
// session (etcd#6127): the deletion of a lock's key (by an operator, or
// its lease expiring) ends that lock only; see Many locks below.
//
// A name is a lock (writers and readers) or a semaphore of one n, never a
// mix: a key is created only if the name has no permit keys (for a lock)
// or only permits of the same n (for a permit), compared in the creating
// transaction; otherwise Lock or Acquire returns an error matching
// dlock.ErrInvalidArgument that names both limits.
//
// A TryLock creates its key only if nothing is ahead that keeps it out
// (for a TryRLock, no writer's key at all). A TryAcquire cannot compare a
// count in a transaction: it creates its permit key, counting the keys in
// the same transaction, and deletes it at once if more than n are there.
//
// # Elections
//
// An election's candidate is a writer: Campaign is Lock, with the
// candidate's value as its key's value from the transaction that queues
// it, so a Mutex of the same name contends with it. The leader is the
// name's oldest key if it is a writer's (a reader or a permit at the head
// means nobody leads); its term is the key's create revision. Proclaim is
// one transaction that puts the new value only if the key still has its
// create revision and is still on the leader's lease (otherwise
// dlock.ErrLockLost, nothing changed); Renew and Unlock compare the same
// two. Leader is one linearizable read of the name's oldest key. Observe
// is one watch on the name's range from "now", then a read of the range
// once the watch exists; from then on it keeps the name's keys from the
// watch's puts and deletes and sends the leader they make whenever it
// changes, replacing a state the reader has not taken yet. Its first read
// is made before it returns, so that etcd out of reach (within 5 s) or a
// permission denied is Observe's error, not a silent channel. A watch that
// ends (compacted past its revision, cancelled by the server) is made anew
// with a new read; clientv3 resumes it across reconnections by itself.
//
// A candidate checks its own lease while it waits (etcd#11007's zombie
// candidate, elected after its lease expired): besides the keep-alive
// every TTL/3, a candidate whose predecessor's deletion would let it in
// reads its own key first if its lease is not known to be alive on its own
// clock (a pause, a partition). A Campaign that fails leaves no key behind
// (etcd#21128): a cancelled or failed wait deletes its key, or hands it to
// the background delete below.
//
// # Leases
//
// A driver keeps one etcd lease per distinct TTL (in practice one), shared by
// all its locks and queue entries, created on first use. etcd counts lease
// TTLs in whole seconds and raises them to a server minimum (1.5 ×
// election timeout, 2 s with the defaults of a test cluster), so the TTL
// asked for is rounded up, and the TTL granted is the one the portable
// layer renews by. A renewal is one KeepAliveOnce, shared by all renewals
// in flight at the time, plus a linearizable read of the lock's key, shared
// with the other renewals in flight too (see Many locks). Both answer by
// callbacks (driver.AsyncRenewer): the keep-alive's answer sends the owner
// check, whose answer settles the renewal, so no goroutine waits for
// either and a wave of renewals of N locks costs the client a few
// goroutines, not N. While a Lock waits, the driver keeps the lease alive
// itself every TTL/3, since no held lock may be renewing it. The lease's expiry or revocation deletes every
// key on it, so it ends every lock on it: each is reported lost.
//
// What a successful renewal proves: the lease was alive when its
// keep-alive was sent, so etcd keeps the key at least a TTL from then (the
// validity the portable layer counts from), and at a linearizable read made
// after that, confirmed by a quorum, the key still had the lock's create
// revision and lease, so no one else held the lock. A leader cut off from
// the others may go on granting keep-alives until it steps down; it cannot
// answer the read.
//
// # Many locks
//
// A client holding many locks costs no goroutine per lock, a few requests
// per renewal interval and a few round trips to release them all:
//
//   - Loss: one watch per etcd client and prefix (the drivers made on one
//     *clientv3.Client with the same Prefix share it) over the whole
//     prefix, for deletes only, from "now", with each driver's waiters' and
//     holders' keys in a map of its own; a delete of one of them is that
//     lock's loss, reported by a call to the portable layer
//     (driver.LossNotifier), and other clients' deletes are dropped. Keys
//     created before the watch existed (or before the driver joined it),
//     and every key when the watch is made anew after it ended (compacted
//     past its revision, cancelled by the server), are owner-checked once
//     it exists; clientv3 resumes it across reconnections by itself. The
//     cost: every etcd client of a prefix receives every delete under it
//     (a watch event of about 100 bytes per release, expiry or cancelled
//     wait); give unrelated groups of clients prefixes of their own. A
//     watch per key would not have that cost, but clientv3 serves every
//     watch with a goroutine.
//   - Renewal: the portable layer renews one client's locks together
//     (driver.RenewCoalescer), and the owner checks of the renewals in
//     flight go together, as reads of 120 keys per transaction (etcd
//     refuses more than its --max-txn-ops, 128 by default; a server that
//     refuses that many gets half as many from then on), all of a batch
//     sent at once: at 10,000 locks, one keep-alive and about 85
//     transactions per renewal interval.
//   - Release: the owner-checked deletes in flight together go in shared
//     transactions in the same way, each key's delete a transaction nested
//     in it (If the create revision and the lease are the lock's, Then
//     delete it), so each key gets its own answer.
//
// Each batch goes as soon as the one before it has returned ("group
// commit"): a lone renewal or release waits for nobody.
//
// # When a delete fails
//
// A key that outlived its purpose would sit on the shared lease, which the
// driver's other locks and waiters keep alive, and block its name until the
// driver closed. So an Unlock whose delete fails (a cancelled context, etcd
// out of reach), and a Lock that ends without the lock and cannot delete
// its queue key within driver.CleanupTimeout, hand the key to a goroutine
// that deletes it, owner-checked, retrying with backoff (50 ms doubling to
// 2 s; at once when another key is handed over) until it is gone or found
// not ours. The lease that carries it is retired: new keys go on a new
// lease, so the old one is renewed only while the locks already on it live.
// Close revokes every lease, deleting whatever is left, and after Close or
// the etcd client's closing nothing renews a lease: no key outlives its
// lease's TTL past the driver. Unlock may be called again after a failure:
// it returns nil once the key is deleted, by itself or in the background,
// and never touches a later holder's key.
//
// # Errors and time bounds
//
// Errors that may pass match dlock.ErrUnavailable, on which the portable
// layer retries a blocking Lock: the connection lost under a request, no
// leader, "request timed out", a leader change, too many requests, and one
// of the driver's own time bounds running out. Permission denied, failed
// authentication, invalid arguments, a full database, a closed client and
// the caller's own context ending do not. A wait that fails so gives up its
// place in the queue.
//
// A release or a TryLock whose request meets a connection that has just
// reset (a blip) is sent again once the client has reconnected, within the
// same bounds. A release whose delete may have gone through, its reply
// lost, and that finds the key gone when sent again, counts as released if
// the lock's lease is still alive (only our own delete removes a live
// lease's key, an operator's etcdctl del aside); if the lease is gone too,
// it returns an error matching dlock.ErrLockLost that says the outcome is
// unknown. A TryLock tries again only once the key it may have made is
// surely deleted.
//
// Releasing a lock returns within 5 s whatever context it is given, a lease
// grant gives up after 5 s (clientv3 would retry it until the caller's
// context ends), and the driver's Close within 1 s plus the closing of a
// client it owns; a lease Close could not revoke expires within its TTL,
// and Close says so.
//
// # A closed etcd client
//
// When the owner of cli closes it under the driver, every held lock
// reports itself lost at once (its Lease's Done closes, with an error
// matching dlock.ErrLockLost), waits and new Locks end at once with an
// error that is not ErrUnavailable, and no loop of the driver calls the
// closed client again: every watch or retry loop backs off, and stops on a
// closed client.
//
// # Connection news
//
// A dlock client with a logger (dlock.WithLogger) logs the etcd client's
// connection lost and restored (driver.ConnNotifier), once per outage, with
// the endpoints (never their user info nor the password) and the number of
// leases held: lost when no endpoint can be reached (every connection
// attempt fails, or a closed connection is not made anew within a second),
// restored when the connection is ready again. One goroutine per driver
// follows the gRPC connection's state (conn.go); without a logger there is
// none. A connection reset and made anew at once, one endpoint of several
// going away, an idle connection and a network that drops packets while the
// connection stays open are not told (the last shows as failed renewals).
//
// # Handoff latency
//
// A waiter watches its predecessor from "now" (revision 0), waits for the
// watch to be created and only then re-reads the queue, so a release
// reaches the next waiter as one watch event. etcd serves a watch that
// starts at a past revision from its "unsynced" group, which a loop
// catches up only every 100 ms; concurrency.Mutex watches from a past
// revision and so hands off in ~50-100 ms. NOTES.md, next to this file,
// gives the design notes: why each of these choices, and what was weighed.
//
// # Inspection
//
// Status reads one name's key range; List (driver.Lister, dlock's
// Client.List and `dlock list`) reads the range of a prefix once and groups
// it by name, each with the status Status gives (one lease TimeToLive per
// name for the TTL left). Both are linearizable reads.
package etcdlock
