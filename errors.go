package dlock

import (
	"strconv"

	"github.com/dlockio/dlock/driver"
)

// Errors returned by this package. Match them with errors.Is; the returned
// errors wrap them with the lock's name and the cause. Context errors are
// returned as themselves (errors.Is(err, context.DeadlineExceeded)).
var (
	// ErrNotAcquired is returned by TryLock when someone else holds the lock.
	ErrNotAcquired = driver.ErrNotAcquired
	// ErrLockLost means the lease may no longer be held: the engine dropped it,
	// renewal failed until the safety deadline, or the maximum hold time ran
	// out. Stop touching the protected resource.
	ErrLockLost = driver.ErrLockLost
	// ErrNotHeld is returned by Unlock on a lease that was already released.
	ErrNotHeld = driver.ErrNotHeld
	// ErrClosed is returned when the client was closed.
	ErrClosed = driver.ErrClosed
	// ErrInvalidArgument is wrapped by errors about bad input; the message
	// names the argument and what was expected.
	ErrInvalidArgument = driver.ErrInvalidArgument
	// ErrUnavailable marks engine errors that may pass (a connection refused,
	// reset or timed out, no quorum). A blocking Lock retries them until its
	// context ends and then returns the context's error joined with the last
	// of them; TryLock, Unlock and Status return them at once.
	ErrUnavailable = driver.ErrUnavailable
	// ErrNotSupported is returned for a primitive the client's engine does
	// not offer (Capabilities says which it does).
	ErrNotSupported = driver.ErrNotSupported
)

// Status is what an engine can tell about a lock without taking it
// (Client.Status).
type Status = driver.Status

// Listed is one lock that Client.List found, with its status.
type Listed = driver.Listed

// Mode says how a lock is held (Status.Mode): Exclusive (a mutex, a
// writer, a leader) or Shared (readers).
type Mode = driver.Mode

// The modes of Status.Mode.
const (
	Exclusive = driver.Exclusive
	Shared    = driver.Shared
)

// Capabilities describes what a client's driver promises: fencing strength,
// fairness, scope and what its engine assumes (Client.Capabilities).
type Capabilities = driver.Capabilities

// Fencing says how strong a driver's fencing tokens are.
type Fencing = driver.Fencing

// The fencing strengths, weakest first.
const (
	FencingNone    = driver.FencingNone    // no usable token
	FencingProcess = driver.FencingProcess // tokens increase while the process lives
	FencingNode    = driver.FencingNode    // while the engine node keeps its data
	FencingStrong  = driver.FencingStrong  // from a replicated, linearizable log; survive failover
)

// Error is what a failed call on a lock returns, after fs.PathError: the
// operation, the lock's name and the cause. errors.Is and errors.As look
// through it, to the sentinels above and to the engine's own error.
type Error struct {
	// Op is the call: "lock", "trylock", "rlock", "tryrlock", "acquire",
	// "tryacquire" (Semaphore), "campaign", "trycampaign", "proclaim",
	// "leader", "observe" (Election), "unlock", "release", "status", "list",
	// "do", "lease" (why a lease ended), "open", "new client", "close".
	Op   string
	Name string // the lock's name; "" for Open and NewClient
	Err  error
}

func (e *Error) Error() string {
	if e.Name == "" {
		return "dlock: " + e.Op + ": " + e.Err.Error()
	}
	return "dlock: " + e.Op + " " + strconv.Quote(e.Name) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// wrap puts an error of op on the lock name in an *Error; nil stays nil.
func wrap(name, op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Name: name, Err: err}
}

// invalid reports a bad argument: which one, what it was, and what was expected.
func invalid(arg string, got any, want string) error { return driver.InvalidArgument(arg, got, want) }
