// Package etcdlock is the etcd driver of dlock: a fair (FIFO) queue of keys
// ordered by create revision, bound to a lease, with the revision as a
// strong fencing token.
//
//	cli, _ := clientv3.New(clientv3.Config{Endpoints: []string{"10.0.0.1:2379"}})
//	c, _ := etcdlock.New(cli, dlock.WithTTL(10*time.Second))
//
// or, owning its own etcd client, dlock.Open(ctx, "etcd://h1:2379,h2:2379/prefix")
// after importing this package ("etcds://" for TLS; see the URL opener).
//
// # How a lock is kept in etcd
//
// A waiter for name N creates the key prefix/<escaped N>/<lease id>-<seq>
// bound to its driver's lease, in one transaction that also reads the two
// newest keys of N. It holds the lock when its key has the lowest create
// revision among N's keys; otherwise it watches only the key just ahead of
// it (no thundering herd) and, after every wake-up, re-reads its own key and
// its new predecessor: a waiter whose key vanished (its lease expired, an
// operator deleted it) returns an error matching dlock.ErrLockLost instead of
// waiting forever (unlike concurrency.Mutex, etcd#19597). The token is the
// holder key's create revision, linearizable and monotonic cluster-wide.
// Release and renewal compare that create revision, so they never touch a
// later holder's key (unlike concurrency.Mutex.Unlock, etcd#22082). Each
// lock watches its own key, so loss is reported per lock, not per session
// (etcd#6127).
//
// # Leases
//
// A driver keeps one etcd lease per distinct TTL (in practice one), shared by
// all its locks and queue entries, created on first use. etcd counts lease
// TTLs in whole seconds and raises them to a server minimum (1.5 ×
// election timeout, 2 s with the defaults of a test cluster), so the TTL
// asked for is rounded up and the granted TTL is what Validity reports. A
// renewal is one KeepAliveOnce, shared by all renewals in flight at the
// time, plus a read of the lock's key. While an Acquire waits, it keeps the
// lease alive itself every TTL/3, since no held lock may be renewing it.
//
// # When a delete fails
//
// A key that outlived its purpose would sit on the shared lease, which the
// driver's other locks and waiters keep alive, and block its name until the
// driver closed. So a Release whose delete fails (a cancelled context, etcd
// out of reach), and an Acquire that ends without the lock and cannot delete
// its queue key, hand the key to a goroutine that deletes it, owner-checked,
// retrying with backoff (50 ms doubling to 2 s; at once when another key is
// handed over) until it is gone or found not ours. The lease that carries
// it is retired: new keys go on a new lease, so the old one is renewed only
// while the locks already on it live. Close revokes every lease, deleting
// whatever is left, and after Close or the etcd client's closing nothing
// renews a lease: no key outlives its lease's TTL past the driver. Release
// may be called again after a failure: it returns nil once the key is
// deleted, by itself or in the background, and never touches a later
// holder's key.
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
// Release returns within 5 s whatever context it is given, a lease grant
// gives up after 5 s (clientv3 would retry it until the caller's context
// ends), and Close within 1 s plus the closing of a client it owns; a lease
// Close could not revoke expires within its TTL, and Close says so.
//
// # A closed etcd client
//
// When the owner of cli closes it under the driver, every held lock
// reports itself lost at once (Lost closes, and Renew says ErrLockLost),
// waits and new Acquires end at once with an error that is not
// ErrUnavailable, and no loop of the driver calls the closed client again:
// every watch or retry loop backs off, and stops on a closed client.
//
// # Handoff latency
//
// A waiter watches its predecessor from "now" (revision 0), waits for the
// watch to be created and only then re-reads the queue. etcd serves a watch
// that starts at a past revision from its "unsynced" group, which a loop
// catches up only every 100 ms; concurrency.Mutex watches from a past
// revision and so hands off in ~50-100 ms. See NOTES.md.
package etcdlock
