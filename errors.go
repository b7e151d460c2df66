package dlock

import (
	"fmt"

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
)

// invalid reports a bad argument: which one, what it was, and what was expected.
func invalid(arg string, got any, want string) error {
	return fmt.Errorf("%w: %s = %v: want %s", ErrInvalidArgument, arg, got, want)
}
