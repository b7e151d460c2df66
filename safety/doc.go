// Package safety is dlock's fault-injection suite; it has tests only.
//
// Workers contend for one lock on each engine (memlock, filelock, Redis,
// Redlock, etcd, ZooKeeper, PostgreSQL), read-modify-write a counter and a
// set under it, and talk to a resource that checks fencing tokens (or, in
// the unfenced scenarios, does not). Faults are injected as named
// scenarios: SIGSTOP and SIGKILL of worker processes, restarts of servers
// and leaders (for PostgreSQL also kill -9 of the server and
// pg_terminate_backend of the holder's session), stalled, slowed and reset
// connections through a proxy per worker, partitions between servers (the
// leader, or the follower the holder is connected to, cut off from the
// other servers in network namespaces of their own, see
// internal/testserver.Network), GC stress, and a release that ignores
// ownership, which the checker must catch. Every engine round trip is
// recorded and checked (package internal/check) with porcupine against a
// lease model, plus token-order and resource invariants.
//
// The other primitives run the same faults on every engine whose
// Capabilities offer them (skipped, with the reason, where not): a
// read-write lock (writers read-modify-write; readers read twice and the
// resource checks nothing changed in between), a semaphore of 2 permits
// (holders register in a resource that counts them) and an election
// (Campaign/Resign as Lock/Unlock, Proclaim, and leader reads that must never
// go back to an older term). The three run side by side on one engine's
// servers and take turns with the faults that stop or cut off a server.
// Their histories are checked against lease
// models of their own (check.RWModel, check.SemaphoreModel), and broken
// drivers (writers let in as readers, a permit too many) must be caught.
// A failed check saves the history and porcupine's visualisation under
// safety/out/.
//
//	go test -race ./safety/                      # short form (part of make test)
//	go test -race ./safety/ -args -safety.full   # make safety: 45 s per scenario
//
// docs/GUARANTEES.md reports what the full run measured.
package safety
