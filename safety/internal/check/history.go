// Package check records what lock clients and a protected resource did
// during a fault-injection run and decides whether it was safe.
//
// Lock operations are checked with porcupine against a lease model: a lock
// that is free, or held by one lease until at least its last successful
// acquire/renew call time plus the TTL, after which the engine may expire
// it. Tokens, the resource's writes and its final state are checked with
// plain invariants. Times are CLOCK_MONOTONIC nanoseconds, which are
// comparable across the processes of one host.
package check

import "golang.org/x/sys/unix"

// Now returns the system-wide monotonic clock in nanoseconds. Unlike
// time.Now's monotonic reading it can be compared between processes.
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err) // cannot fail on Linux
	}
	return ts.Nano()
}

// Kind names a lock operation.
type Kind string

// The lock operations a history holds.
const (
	Acquire Kind = "acquire"
	Renew   Kind = "renew"
	Release Kind = "release"
	Lost    Kind = "lost"  // the driver's Lost channel closed (the engine dropped the lock)
	Crash   Kind = "crash" // the client's process was killed; Call is the kill, Return the reap
)

// Outcome is what an operation is known to have done.
type Outcome string

// Outcomes. Unknown means the engine may or may not have applied it (a
// network error, a process killed mid-call); Cancelled means a wait that was
// given up, which by the driver contract leaves nothing behind.
const (
	OK        Outcome = "ok"
	Refused   Outcome = "refused" // ErrNotAcquired or ErrLockLost: nothing changed
	Unknown   Outcome = "unknown"
	Cancelled Outcome = "cancelled"
)

// Op is one lock operation seen by a client.
type Op struct {
	Client  int    // worker id (one process or goroutine)
	Lease   int64  // the hold the op is about; Acquire creates it
	Kind    Kind   //
	Call    int64  // Now() just before the request
	Return  int64  // Now() just after the answer; 0 if it never came
	TTL     int64  // ns, Acquire and Renew: the TTL asked for
	Until   int64  // Acquire and Renew OK: Since+TTL of the driver's Validity; 0 means Call+TTL
	Token   uint64 // Acquire OK
	Outcome Outcome
	Err     string `json:",omitempty"`
	Shared  bool   `json:",omitempty"` // Acquire: a reader's (read-write lock)
}
