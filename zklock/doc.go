// Package zklock is the ZooKeeper driver of dlock: a FIFO queue of
// protected ephemeral-sequential znodes, one queue per lock name, where
// each waiter watches one node ahead of it: its predecessor if that heads
// the queue, else the node two ahead.
//
//	c, err := dlock.Open(ctx, "zk://user:secret@h1:2181,h2:2181/myapp/locks", dlock.WithTTL(5*time.Second))
//	c, err := zklock.Dial(ctx, []string{"h1:2181", "h2:2181"}, nil, dlock.WithTTL(5*time.Second))
//
// or, on a connection of your own,
//
//	conn, events, err := zk.Connect(servers, 10*time.Second, zk.WithHostProvider(zklock.NewHostProvider()))
//	c, err := zklock.New(conn, events, &zklock.Options{SessionTimeout: 10 * time.Second})
//
// (NewHostProvider: go-zookeeper's own waits a second before it reconnects
// to the server it just lost, as on a one-server ensemble, which can cost a
// short lease after a mere connection reset.)
//
// # URLs
//
//	zk://[user:password@]host[:port][,host[:port]...][/prefix][?session_timeout=DURATION]
//
// The scheme is "zk" (Scheme), registered when the package is imported.
//
//   - host:port, comma-separated: the ensemble's servers; the port defaults
//     to 2181. go-zookeeper connects to one at a time and moves to another
//     when it fails. Open waits for a session until its context ends.
//   - user:password: ZooKeeper digest authentication (Options.Auth), added
//     to every connection; the nodes the driver creates then give that user
//     alone every permission. Without user info in the URL, the environment
//     variables DLOCK_ZK_USERNAME and DLOCK_ZK_PASSWORD supply them when either
//     is set (EnvUsername, EnvPassword). Neither is ever logged or put in an
//     error.
//   - /prefix: the znode under which the lock queues live (Options.Prefix),
//     an absolute, clean path, created if missing; default /dlock
//     (DefaultPrefix). A trailing slash is ignored.
//   - session_timeout: one session with this timeout (time.ParseDuration
//     syntax, > 0) for every lock, whatever TTL it asks
//     (Options.SessionTimeout). Without it, the default, each lock lives in
//     a session whose timeout is its TTL, one session per distinct TTL (see
//     Sessions below).
//
// No other parameter is accepted. Open's other settings are dlock's
// options (dlock.WithTTL, ...).
//
// What the driver assumes of the engine: ZooKeeper 3.5 or later for
// container parents (older servers, which answer a container create with
// UNIMPLEMENTED, get persistent ones, never removed; on 3.5 and later a
// parent is always a container, a failed create sent again as one);
// multi transactions (3.4 or later); the server's minSessionTimeout at its
// default of 2 × tickTime or above, so that a follower reports its
// sessions' activity to the leader within a quarter of any session
// timeout (see quorum.go). It assumes no synchronised clocks: validity is
// measured on the client's monotonic clock from the send time of requests.
//
// Like every lock on ZooKeeper, it assumes that what the ensemble
// acknowledged stays: no lock recipe is safe on an ensemble that forgets a
// committed transaction. ZooKeeper 3.8.0 (tested here) can: with two of
// three servers cut off at once, a server whose sync with a new leader is
// interrupted keeps the new epoch with its stale log, leads the next
// epoch, and has the others truncate transactions they had committed
// (what ZOOKEEPER-4685 and ZOOKEEPER-4643 describe; see the fixes proposed
// in https://github.com/apache/zookeeper/pull/1993 and
// https://github.com/apache/zookeeper/pull/2028). Nodes deleted with an
// expired session come back, nodes created since are gone, and tokens can
// go back; a fenced resource still refuses the stale ones.
// TestEnsembleKeepsCommittedWrites (opt-in) checks an ensemble for it.
//
// The layout of the nodes (see names.go) is the one earlier versions used:
// lock names are escaped by internal/lockname as zklock escaped them
// before, so locks taken by earlier versions are seen by this one. List
// (driver.Lister) reads the containers under the prefix node and gives
// each name back with lockname.Unescape, with its Status; a name too long
// to keep (stored as "~" and its SHA-256) is listed under that engine
// name, and only when the prefix asked is empty.
//
// # How a lock is held
//
// Lock name N lives at <prefix>/<escaped N>, a container node the server
// removes once empty. Acquire creates <prefix>/<N>/_c_<guid>-lock-<seq>, an
// ephemeral sequential node whose name carries a fresh guid (Curator's
// "protected" mode): if the connection drops before the create's reply
// arrives, the driver lists the queue and finds its node by the guid rather
// than leaving an orphan that would block everyone until the session ends.
// The node with the lowest sequence holds the lock; the node right behind
// it watches it, and every other node watches the one two before it, so a
// release wakes two waiters, not the herd: the next in line, which takes
// the lock with no read, and the one after, which reads the queue while
// the new holder holds and then waits for that holder alone. The fencing
// token is the holder node's czxid: the zxid of the transaction that
// created it, which increases across the whole ensemble and survives
// leader failover. Grant order is queue order, which is creation order, so
// tokens increase in grant order.
//
// # Read-write locks and semaphores
//
// A Mutex is the writer side of the read-write lock of its name: readers
// (Mode Shared) queue in the same container as writers, in the same order,
// as in Curator's InterProcessReadWriteLock; so do the permits of a
// semaphore (see modes.go):
//
//   - a writer holds at the head of the queue and otherwise watches the node
//     just before it, of any kind, if that is the head, else the node two
//     before it: the mutex's path and layout, unchanged;
//   - a reader holds once no writer is ahead of it and otherwise watches the
//     last writer ahead of it, never a reader. So readers share, and a
//     reader that comes after a waiting writer queues behind it: a stream of
//     readers cannot starve a writer;
//   - a semaphore permit (Limit n) holds among the first n nodes and
//     otherwise watches the n nodes just before it: while they are there at
//     least n are ahead, and no node can join ahead of it, so only the
//     deletion of one of them can let it in. A holder leaving or a waiter
//     giving up anywhere ahead wakes the waiters within n behind it, no
//     more, and none polls. A crashed holder's node goes with its session,
//     so its permit comes back after the session timeout, the lease's TTL.
//
// Each counts only the nodes ahead of its own: kazoo's lock counted later
// ones too and deadlocked (https://github.com/python-zk/kazoo/issues/649).
// A reader's node carries Curator's marker at the head of its guid,
// _c___READ__<24 hex digits>-lock-<seq>, and a permit's the limit,
// _c___S<n>__<hex digits>-lock-<seq> (n up to 999,999,999), so that an
// earlier version of this package, which knows no marker, sees them as
// nodes like its own and waits behind them as a writer. A request whose
// limit differs from that of a node ahead of it (a lock's is 0) is refused
// with driver.ErrInvalidArgument naming both, and its node removed: never
// a mix of a lock and a semaphore, or of two sizes. Readers' and permits'
// leases are nodes like a writer's, granted, proven at the leader, renewed,
// watched for loss and released the same way; the token is the node's
// czxid, one sequence per name across modes and permits.
//
// # Elections
//
// A leader is the writer holding the lock of the election's name, on the
// mutex's path (Capabilities.Election; see election.go). Its value is its
// queue node's data, written by the very create that queues the node, so
// the value is there the moment the node heads the queue; Proclaim
// (driver.ValueSetter) replaces it in a multi with a check of the node: a
// transaction the leader checks and a quorum logs, which a server cut off
// from the quorum cannot answer, and which fails with ErrLockLost,
// changing nothing, once the node is gone. A value is at most 1,000,000
// bytes (ZooKeeper's jute.maxbuffer is 1 MiB by default). The term is the
// node's czxid, the lock's token.
//
// Leader (driver.Observer's Holder) reads the head of the queue and, if it
// is a writer, its node's czxid and data; a queue that is empty or headed
// by readers or permits has no leader. A transaction (a check of the
// prefix node) goes first, so the read sees at least the state the quorum
// had after the call began: a cut-off server cannot report a leader the
// quorum has already replaced. Observe makes that read, then follows the
// queue by watches, no polling: a child watch on the name's container (an
// exists watch while there is none) and a data watch on the head writer's
// node; each firing reads again and re-arms them, and the newest leader
// replaces one not yet received. go-zookeeper keeps watches across
// reconnections to the same session (the server fires those whose nodes
// changed meanwhile); after a session expiry the observer reads again,
// proven at the quorum. Terms never decrease: a read from a server behind
// the previous one is not reported (its watch fires once it catches up).
// Watch reads are answered by the connected server: an observer on a
// server cut off from the quorum sees no change until that server gives up
// on the leader (syncLimit × tickTime) and go-zookeeper moves on.
//
// Curator's LeaderLatch once had two leaders at once
// (https://issues.apache.org/jira/browse/CURATOR-696): after a reconnect it
// took a node of its earlier session for its own. A node counts as ours
// here only once its ephemeral owner is our live session, and a grant
// after a wait is proven by a transaction of the node at the leader: its
// create, if sent less than a quarter of the session timeout before, or a
// check of the node.
//
// # One round trip for an uncontended Lock
//
// go-zookeeper has no create2 (a create that returns the new node's stat),
// so the create is a multi that also writes the parent's data
// unconditionally: the parent's stat in the reply has mzxid = the multi's
// zxid = our node's czxid, and numChildren as our transaction left the
// parent. When that count is 1 our node is alone in its queue at the
// create's zxid (nothing ahead, and nothing can join ahead later), and the
// lock is granted on the create's reply with no read: the create, a
// transaction a quorum committed, is the grant's proof. Otherwise the queue
// is listed; where the queue had company at the driver's last create in
// it, the listing is sent right behind the create on the same connection
// (the server answers a session's requests in order, so it sees our node;
// when it happens to be sent first, the driver reads again). The stat and
// watch of our own node (session check, loss watch) go out as soon as the
// create's reply is in, and nobody waits for them on a grant. A parent
// whose ACL refuses the write makes the driver fall back to a plain create
// and read the czxid and the queue after it.
//
// A name's parent is made when the driver guesses it missing (a name it
// has not seen, when the latest such were missing): its create goes right
// before the multi, in the same round trip. Otherwise the multi goes alone
// and, if it fails for want of a parent, is sent again after the parent's
// create. The root is made once per driver (again if it is found gone). So
// a fresh name costs two writes (go-zookeeper's multi cannot carry a
// container's create, opCreateContainer) and the own-node stat; a known
// one, the multi and the stat.
//
// # Sessions, and why the lease TTL is the session timeout
//
// A ZooKeeper lock lives as long as its session: the leader deletes the
// session's ephemeral nodes when it has heard nothing from the client for
// the session timeout it granted. So the session timeout is the only TTL
// the engine has, and the driver uses the TTL asked for as the session
// timeout:
//
//   - Open (zk:// without session_timeout) and Dial (Options.SessionTimeout
//     zero) put each lock in a session whose timeout is the lock's TTL
//     (dlock.WithTTL, given to the client or to one mutex; dlock.DefaultTTL
//     otherwise). They keep one session per distinct TTL, made when a lock
//     first asks for it, up to 8; a ninth distinct TTL is refused with
//     ErrInvalidArgument. The first session, which Dial makes to check the
//     servers, has dlock.DefaultTTL and is closed once a lock asks for
//     another TTL if no lock used it.
//   - ?session_timeout= (Options.SessionTimeout > 0), and New, use one
//     session with that timeout for every lock, whatever TTL the lock asks
//     for: the lease's TTL is the session timeout, and the portable layer
//     scales its safety margin and renew interval to it.
//
// The server clamps the timeout asked to its [minSessionTimeout,
// maxSessionTimeout] (2 and 20 × tickTime by default: 4 s to 40 s with the
// sample configuration's tickTime of 2 s). The driver uses the timeout granted, read from
// the server's connect response on every connection it makes (go-zookeeper
// does not expose it; on New's borrowed connection a probe session learns
// it), so a lease never outlives what the server enforces. When the grant
// differs from the request, Client.Capabilities().Notes says so: a lock
// asking a TTL above maxSessionTimeout lives (and renews) on the shorter
// window; one below minSessionTimeout is freed only after the longer one
// when its holder vanishes.
//
// Validity counts the granted session timeout from the send time of the
// last transaction that proved the session and our node alive at the
// leader: the create (for a grant after a wait too, while it was sent less
// than timeout/4 before: see createProof in quorum.go), or a check of our
// node in a multi, which a longer wait and every renewal send. A read
// would not do: the connected
// server answers it alone, and a server cut off from the quorum goes on
// answering reads for up to syncLimit × tickTime while the leader expires
// the session (see quorum.go). A renewal therefore costs one round trip
// through the leader and one logged transaction, shared by the session's
// renewals in flight together: they go in one multi of a check per node
// (up to 1,000 per multi; releases go the same way, in multis of
// deletes), and the driver tells the portable layer to
// schedule a client's renewals together (driver.RenewCoalescer), so a
// client holding N locks spends a few requests per renewal interval, not
// N; nor does a goroutine per lock wait for the round's answer: the locks
// implement driver.AsyncRenewer, and the round's sender reports each
// renewal's outcome by a call. A node found gone fails that lock's renewal
// alone. And since a follower
// tells the leader of its sessions' activity only at the leader's pings,
// the TTL reported counts from the session's latest activity the leader
// must have heard of: a request whose answer came back timeout/4 or more
// before the proof was sent (its send time alone would not do: a stalled
// connection that flushes delivers it back to back with the proof). That is
// 5/8 of the timeout while a read every timeout/16 keeps such activity
// recent (a third at worst, on New's connection in its first moments).
//
// go-zookeeper declares the connection lost after ⅔ of the timeout without
// a reply and spends the remaining third trying other servers, hoping to
// resume the session before the server expires it. While disconnected
// (Curator calls it SUSPENDED) the lock may or may not still be held;
// Renew then fails with an error that is not ErrLockLost, so the portable
// layer keeps the lease only until lastAnswer + timeout − margin and then
// declares it lost, which is before the server could have expired the
// session and granted the lock to the next node. If the connection comes
// back in time with the same session the next renewal succeeds and nothing
// was lost. When the server reports the session expired, every lock of the
// session reports lost at once (Lost); a node deleted by someone else is
// noticed through a watch on it. go-zookeeper then opens a new session on
// its own, and new locks are taken on it. Loss costs no goroutine per held
// lock (driver.LossNotifier): the session keeps its held locks and reports
// them lost when it ends, and the driver reads the watch events of every
// held node from the connection's event callback (Dial, zk://) or the
// event channel given to New. New without an event channel spends a
// goroutine per held lock on its watch, and learns of an expiry late.
//
// # Errors, outages and clean-up
//
// Errors that may pass with the connection — no server reachable, the
// connection dropped, the session expired or moved — are marked
// driver.Unavailable, so a blocking Lock waits them out; what the server
// decided (no auth, bad ACL, ...) is reported as it is. A *zk.Conn given to
// New and closed by its owner makes every call fail at once with an
// unmarked error.
//
// A Release whose delete fails because the connection dropped (a blip; the
// session lives on) sends it again, with backoff, within its context; if
// the node is then gone, the delete may have gone through with its reply
// lost: that counts as released if the session is shown alive afterwards
// (only the session's end or our own delete removes the node, an
// operator's delete by hand aside), and otherwise returns an error matching
// dlock.ErrLockLost that says the outcome is unknown. A TryLock's first
// read is sent again likewise.
//
// A node the driver could not delete (a Release whose context ended or
// whose connection was down, a Lock cancelled while queued) is removed in
// the background, retried with backoff until it is gone: left behind, it
// would block its queue for as long as its session lives, and a session
// can ride out an outage (or a loss of quorum, which stops expiry). The
// retries end when the driver closes: a connection the driver owns is then
// closed, which ends the session and its nodes; on New's connection they go
// on in the background for up to one session timeout after Close, which
// itself returns within about a second.
package zklock
