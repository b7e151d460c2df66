// Package redislock is the Redis driver of dlock: locks, read-write locks,
// semaphores and elections on a single Redis node (or a Redis Cluster /
// Sentinel client), or a Redlock, a mutex only, over several independent
// Redis masters.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379"})
//	c, err := redislock.New(rdb, nil, dlock.WithTTL(10*time.Second))
//
//	c, err := dlock.Open(ctx, "redis://:password@localhost:6379/0")
//	c, err := dlock.Open(ctx, "redlock://h1:6379,h2:6379,h3:6379")
//
// # URLs
//
// Importing the package registers three schemes with dlock.Open:
//
//	redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?PARAMS]
//	rediss://[[USER]:PASSWORD@]HOST:PORT[/DB][?PARAMS]
//	redlock://[[USER]:PASSWORD@]H1:P1,H2:P2,H3:P3[/DB][?PARAMS]
//
// redis:// (Scheme) is one node, rediss:// (TLSScheme) one node over TLS,
// redlock:// (RedlockScheme) a Redlock over at least 3 independent masters
// (an odd number is best), which share the user, password and database. DB
// is the database number, 0 by default. Query parameters:
//
//   - prefix=P: Options.Prefix, what every key and channel name starts
//     with (default "dlock:"); it must not hold '{' or '}'.
//   - fairness=fifo or fairness=barging: Options.Fairness (default
//     DefaultFairness; barging with the default StarvationBound);
//     redlock:// ignores it.
//   - tls=true (redlock:// only): TLS to every node, checking each host's
//     certificate against the system's roots.
//   - redis:// and rediss:// also take go-redis's own URL parameters
//     (redis.ParseURL: dial_timeout, read_timeout, write_timeout,
//     pool_size, max_retries, client_name, protocol, …); an unknown one is
//     an error. redlock:// takes prefix and tls only and ignores the rest.
//
// Environment: DLOCK_REDIS_PASSWORD (EnvPassword) is the password of a URL
// that has none. REDIS_PASSWORD, the name read before, is deprecated; it is
// read when DLOCK_REDIS_PASSWORD is unset or empty.
//
// A client made from a URL dials within 5 s and waits at most 3 s for a
// reply (unless the URL sets dial_timeout, read_timeout or write_timeout),
// never retries inside go-redis (the portable layer decides what to retry),
// ends every request by its context's deadline, and is closed by the
// driver's Close. Open checks every node before it returns: that it answers
// (a Redlock needs a majority; the others are named in Capabilities'
// notes), accepts the password and has the database, so that a bad URL
// fails at Open with a clear error; and that its maxmemory-policy keeps
// locks (see below).
//
// # Single node
//
// A lock is a few names sharing one hash tag, so that they live in one slot
// of a Redis Cluster: the lock key PREFIX{NAME} holding the exclusive
// holder's random owner id with the TTL, the fence counter
// PREFIX{NAME}:fence, the release channel PREFIX{NAME}:released, the waiter
// queue PREFIX{NAME}:waiters (in order of arrival) with the waiters'
// deadlines PREFIX{NAME}:alive, the set of given-up attempts
// PREFIX{NAME}:gone, a note PREFIX{NAME}:released:OWNER that the holder
// OWNER released, kept for the TTL (only for a client that resends a
// command whose reply was lost, as go-redis does by default: resend.go),
// and the shared holders PREFIX{NAME}:shared (readers,
// or a semaphore's permits, each with the server time at which its hold
// runs out) with their tokens PREFIX{NAME}:tokens; for elections, the
// leader's value PREFIX{NAME}:value, the waiting candidates' values
// PREFIX{NAME}:values, the observers' marker PREFIX{NAME}:observed and
// the channel PREFIX{NAME}:holder. NAME is the lock's name escaped as by every dlock
// driver (internal/lockname): every byte other than letters, digits, '-'
// and '_' written as %XX, so that names of any bytes map to distinct keys
// and cannot break the hash tag. Earlier versions of this package kept '.'
// and '/' as they were: a lock whose name holds either, taken by such a
// version, is not seen by this one, so do not run both on such names at
// once; versions before read-write locks ordered the queue by deadline, so
// do not run one beside this one on a lock that has waiters. The fence
// counter has no TTL: it must outlive the lock for tokens to keep
// increasing, so it stays behind (a few bytes per lock name ever used); the
// other keys expire.
//
// Every change of a lock's state is one Lua script. Taking a mutex (the
// writer side of the read-write lock of its name): if the key is absent and
// no reader holds, it increments the fence counter, sets the key and
// returns the counter as the fencing token; otherwise it returns how long
// until the holder's TTL runs out. A reader (RWMutex.RLock) is let in if no
// writer holds and no writer waits in the queue before it (readers that
// come after a waiting writer queue behind it, so a stream of readers
// cannot starve it); it is added to the shared holders with an expiry of
// the server's TIME plus its TTL, and takes its token from the same
// counter. A permit of a semaphore of N (Semaphore(name, N).Acquire) is a
// shared hold of the same kind, let in while fewer than N hold and fewer
// than N, holders and waiters queued before it, are ahead of it; the owner
// id of each holder and waiter carries its N, so that a request with
// another N, or for a lock, while the name is held or awaited as a
// semaphore (or the other way round) is refused with an error matching
// driver.ErrInvalidArgument that names both. Expired readers and permits
// are dropped by the next script that looks, so a crashed holder keeps its
// slot for its TTL and no longer. Renew and release compare the owner id
// (in the key, or among the shared holders) before they extend or delete.
//
// A waiter subscribes to the release channel (all waiters of a client share
// one pub/sub connection) and, once the server has confirmed that, tries
// again; that try, failing, puts it in the waiter queue. A release (and a
// waiter that gives up) hands what it frees to the waiters at the head of
// the queue in the same script: one writer, or every reader up to the next
// writer, or as many waiters as permits are free. Each grant takes the next token, is made on the server (the key
// set to the waiter's owner id, or the reader added to the shared holders)
// and published as "OWNER TOKEN TTL", so that the waiter holds the lock
// when the message arrives, with no further round trip. The waiter may
// also find the lock already its by its own attempt, before the message
// arrives (a pub/sub connection can lag the command connection): the client
// then remembers that the grant was taken up, so that the late message is
// not taken for a grant to a waiter that gave up, which would be given back.
// A grant message older than the waiter's last look at the lock (its token
// no higher than the fence counter that look saw) is ignored. A waiter that
// gives up takes itself out of the queue, and the same script gives back a
// grant made to it meanwhile, passing the lock on to the next; a grant
// message that reaches a client whose waiter has left is given back too. If
// the server does not answer that dequeue (the waiter gave up while cut
// off), the driver asks again in the background, after pauses growing from
// 50 ms to 1 s, until the server answers or the driver is closed: a release
// that granted the leftover entry meanwhile is passed on within about a
// second of the client reaching the server again, not at the grant's
// expiry. A waiter whose process died leaves a grant to expire after the
// TTL, and its queue entry expires 2 x the longer of its own TTL and the
// holder's remaining TTL, + 1 s, after its last try. A waiter also tries
// again when the holder's hold would expire, so a crashed holder is
// replaced at its expiry, not at some poll tick; and a waiter whose
// subscription cannot be made or is not confirmed waits that way too, and
// subscribes again, rather than fail or hang. With nobody queued, a release
// is a plain compare-and-delete that publishes nothing.
//
// That hand-over is Options.Fairness FIFO's, and every mode's for readers
// and permits. With Barging, the default (in the manner of Go's
// sync.Mutex), a mutex's or writer's waiter carries its
// Options.StarvationBound in its owner id ("~" and microseconds); while it
// has been at the head of the queue for less than that, a release frees the
// lock without handing it over or publishing anything, and the first to
// ask takes it, often the releasing client locking again. The head's
// record, "OWNER SINCE", is the field ~head of PREFIX{NAME}:values: made
// when the waiter queues at the head (its attempt's reply tells it when its
// bound is up), or by the first release to find a new waiter there (which
// publishes "OWNER +BOUND", BOUND in microseconds, telling it the same
// without waking it to race for the lock). The waiter tries by itself when
// its bound is up, so a lock nobody takes is free at most that long; past
// its bound, a release hands it the lock as FIFO does.
//
// # Elections
//
// A leader is the exclusive holder of the name's lock (a Mutex of the same
// name contends with it). The script that grants the lock also writes the
// leader's value, "OWNER VALUE" in PREFIX{NAME}:value with the lock key's
// TTL: from the request, or, for a waiting candidate granted by a release,
// from PREFIX{NAME}:values where it queued it. Proclaim (SetValue) is one
// owner-checked script. Leader (Holder) reads the lock key, the fence
// counter (nothing else is granted while a writer holds: it is the
// leader's term) and the value, which counts only if its OWNER holds the
// key. Observe subscribes to PREFIX{NAME}:holder on the driver's pub/sub
// connection, then reads; each read also sets PREFIX{NAME}:observed for
// 60 s, and while it exists every script that grants, releases or
// re-values the exclusive lock publishes on that channel, so each observer
// reads again; without observers the mutex's scripts publish nothing. An
// observer also reads again after go-redis resubscribes its connection,
// when the hold it last read runs out (a leader whose key just expires is
// published by nobody; keyspace notifications are off by default and are
// not relied on) and at least every 20 s. A Redlock offers no elections.
//
// An attempt whose reply was lost is given back, and the server then
// refuses that owner's attempts for a while (the :gone set), so that a copy
// arriving late cannot take the lock for nobody.
//
// Fencing tokens come from the node's counter (driver.FencingNode): they
// increase as long as the node keeps its data. A restart without
// persistence, or a failover to a replica that had not yet received the last
// increments (replication is asynchronous), can repeat tokens and can grant
// a lock twice. So can eviction: a node whose maxmemory-policy is allkeys-*
// (any key, the fence counter too, may be evicted) is refused, at Open or
// before the first lock of a client made with New; under volatile-* a lock
// key may be evicted before its TTL (the counter is kept), which
// Capabilities notes, as it notes a policy the server will not show.
//
// # Listing
//
// The Driver implements driver.Lister (Client.List, `dlock list`): it walks
// the keys PREFIX{ESCAPED-NAME-PREFIX* with SCAN and MATCH (never KEYS,
// which blocks the server; on a Cluster, on every master), with the bytes
// of Options.Prefix that MATCH reads as a pattern (* ? [ ] \) quoted, and
// keeps only keys that start with the prefix exactly. Each name found is
// read with the same script as Status and listed, with that Status, if it
// is held or awaited; a name with only its fence counter left is not. A
// key under the prefix that this driver cannot have made (its tag is not an
// escaped name) is skipped; one whose tag is a hashed name ("~" and a hash,
// which this driver never makes itself: Redis keys have no length limit)
// is listed under that tag, only for an empty List prefix. A Redlock walks
// every node and needs a majority of them to answer, so that a lock held
// on a majority is found; each name's Status is then the Redlock's (held
// while a majority keeps it). The walk is not a snapshot: a lock taken or
// released during it may or may not be listed.
//
// # Many locks
//
// Renewals are batched ("group commit", driver.RenewCoalescer): on each
// node, the first Renew goes out at once, and the renewals that arrive
// while batches are in flight go together in the next (at most 4 in
// flight per node), one script of at most 1,000 entries, each
// owner-checked on its own exactly as a single renewal (a lost lock in a
// batch is reported lost, the others are extended). The portable layer puts one client's renewals on a common
// grid, so a client holding N locks sends a few scripts per node per
// renewal interval rather than N (measured with BenchmarkScale: 10,000
// locks on one node, about 20 scripts per 2 s interval instead of about
// 9,000). A Redlock renews on every node the same way, waiting for the
// nodes' batches without a goroutine per node. A Cluster client (or a Ring)
// renews each lock by its own script, as before: one script may only touch
// keys of one hash slot, and a client's locks are spread over as many slots
// as they have names. A Redlock's releases are batched the same way on
// each node (one script for the releases in flight together, each
// owner-checked, waking a waiter and marking its attempt over exactly as a
// single release does, and answered on its own); a held Redlock lock
// keeps only its key's name, the others are made again for its release.
// Holding a lock costs no
// goroutine (Redis does not
// tell a holder that its key went away; renewal and the portable layer's
// deadline do).
//
// # Redlock
//
// With several independent masters (NewRedlock, redlock://; use an odd
// number, 3 or more) a lock is taken on each node in parallel and held if a
// majority granted it within its validity time: TTL minus the time the
// attempt took minus a drift allowance of TTL/100 + 2 ms. Renewal must
// succeed on a majority; release goes to every node. Each attempt writes a
// key value of its own (the owner id and the attempt's number); a failed one
// gives back what it took on each node once that node has answered, and
// every give-back and release records the attempt as over on the node, which
// then refuses its requests: a request that reaches a node late (a
// straggler) cannot leave a key there that nobody will release. A Redlock
// opened from a URL needs a majority of its nodes to answer; the others are
// named in Capabilities' notes.
//
// A Redlock is a mutex only: read-write locks and semaphores return an
// error matching driver.ErrNotSupported, and Capabilities says so.
//
// Redlock waiters queue on every node under a ticket of their own (the time
// they began to wait), the same on each node, so the nodes' queues agree on
// who is first; PREFIX{NAME}:alive holds each queued waiter's deadline. A
// release takes the first waiter out of each node's queue and publishes its
// owner id: one client tries, rather than every waiting client at once,
// which split the vote so that all backed off. The woken waiter, if it
// fails, queues again with its ticket, keeping its place; if it gives up it
// wakes the next in line (a node that does not answer its dequeue is asked
// again in the background, as on a single node). A holder's release takes its own entries out of
// every node's queue, so that no stale entry absorbs a wake-up. Contenders
// that split the vote so that each finds most nodes held but nobody a
// majority sleep like waiters, and the give-back of each wakes the first in
// line, so that someone tries as soon as the keys are gone; contenders that
// find most nodes free pause a random moment and try again.
//
// Tokens stay strictly increasing across grants: after locking a majority,
// the client reads the fence counters of the nodes it holds, takes the
// largest plus one, and writes it back to a majority (each node only raises
// its counter) before the grant returns. Any later majority shares a node
// with that one, reads at least that token, and goes higher.
//
// What Redlock assumes, stated plainly (see Martin Kleppmann, "How to do
// distributed locking", 2016, and Salvatore Sanfilippo, "Is Redlock safe?",
// 2016): (1) clocks on the nodes and the client advance at nearly the same
// rate (bounded drift; no large jumps of the nodes' clocks, which Redis uses
// to expire keys); (2) a node that crashes either keeps its data (AOF with
// fsync=always) or stays down for at least a TTL before rejoining empty:
// a node that returns at once with no data lets a second client form a
// majority while the first still holds one in its own view; (3) a client
// paused longer than the validity time (GC, swapping) may act after its
// lock expired. Kleppmann's point stands: Redlock's safety rests on timing,
// so protect the resource with the fencing token, which this driver makes
// strictly increasing under assumption (2). The portable layer gives a
// lease up on the client's monotonic clock before the nodes could expire it,
// which addresses the client-side half of (3) but not a pause of the whole
// process.
//
// # Errors, contexts and logging
//
// Errors that may pass (a refused, reset or timed-out connection, a pool
// timeout, LOADING, TRYAGAIN, CLUSTERDOWN, MASTERDOWN, READONLY, BUSY, OOM,
// a Redlock majority out of reach) match driver.ErrUnavailable, so that a
// blocking Lock rides them out; WRONGTYPE, a key without TTL, a refused
// password and a go-redis client closed by its owner do not.
//
// Every request ends by its context's deadline, also on a go-redis client
// without ContextTimeoutEnabled: when the deadline is shorter than the
// client's own read and write timeouts, the driver stops waiting for the
// request at the deadline (a goroutine waits it out). Clients with
// ContextTimeoutEnabled (those made from URLs) need nothing of the kind. As
// in go-redis, a request is not abandoned on a cancellation without
// deadline.
//
// Clients made from a URL never write to go-redis's process-wide logger:
// their failed dials come back as errors only. Clients passed to New or
// NewRedlock log as their owner configured go-redis (redis.SetLogger).
//
// A client given dlock.WithLogger logs each node's connection lost (a
// request failing with a network error, a failed dial, the waiters' pub/sub
// connection dropped) and restored (the node answers again; a node nobody
// sends anything is told back with the next request), once per change,
// naming the node by its address and never its password. For that the
// driver adds a go-redis hook to each node's client (Driver.NotifyConn).
package redislock
