// Package safety is dlock's fault-injection suite; it has tests only.
//
// Workers contend for one lock on each engine (memlock, filelock, Redis,
// Redlock, etcd, ZooKeeper), read-modify-write a counter and a set under it,
// and talk to a resource that checks fencing tokens (or, in the unfenced
// scenarios, does not). Faults are injected as named scenarios: SIGSTOP and
// SIGKILL of worker processes, restarts of servers and leaders, stalled,
// slowed and reset connections through a proxy per worker, partitions
// between servers (the leader, or the follower the holder is connected to,
// cut off from the other servers in network namespaces of their own, see
// internal/testserver.Network), GC stress, and a
// release that ignores ownership, which the checker must catch. Every
// engine round trip is recorded and checked (package internal/check) with
// porcupine against a lease model, plus token-order and resource invariants.
// A failed check saves the history and porcupine's visualisation under
// safety/out/.
//
//	go test -race ./safety/                      # short form (part of make test)
//	go test -race ./safety/ -args -safety.full   # make safety: 45 s per scenario
//
// docs/GUARANTEES.md reports what the full run measured.
package safety
