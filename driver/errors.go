package driver

import "errors"

// The sentinel errors shared by drivers and the portable package, which
// re-exports them. Match them with errors.Is.
var (
	// ErrNotAcquired: the lock is held by someone else (TryLock).
	ErrNotAcquired = errors.New("dlock: lock not acquired")
	// ErrLockLost: the lock is no longer held by this owner, or may not be.
	ErrLockLost = errors.New("dlock: lock lost")
	// ErrNotHeld: the lease was already released.
	ErrNotHeld = errors.New("dlock: lock not held")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("dlock: client closed")
	// ErrInvalidArgument: an argument was out of range or malformed; the
	// wrapping error names it and says what was expected.
	ErrInvalidArgument = errors.New("dlock: invalid argument")
)
