package driver

import (
	"errors"
	"fmt"
)

// The sentinel errors shared by drivers and the portable package, which
// re-exports them. Match them with errors.Is. Their texts carry no package
// prefix: the error that wraps one says where it came from (dlock.Error
// does: "dlock: lock \"jobs/nightly\": lock not acquired").
var (
	// ErrNotAcquired: the lock is held by someone else (TryLock).
	ErrNotAcquired = errors.New("lock not acquired")
	// ErrLockLost: the lock is no longer held by this owner, or may not be.
	ErrLockLost = errors.New("lock lost")
	// ErrNotHeld: the lease was already released.
	ErrNotHeld = errors.New("lock not held")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
	// ErrInvalidArgument: an argument was out of range or malformed; the
	// wrapping error names it and says what was expected.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnavailable: the engine could not be reached or could not answer
	// now, and may later: a refused, reset or timed-out connection, no
	// quorum, a session being re-established. A blocking Lock retries such
	// errors (with backoff) until its context ends; every other engine error
	// is reported at once. Drivers mark errors with Unavailable.
	ErrUnavailable = errors.New("engine unavailable")
	// ErrNotSupported: the engine's driver does not offer this primitive
	// (a read-write lock or a semaphore on Redlock) or operation (Status);
	// its Capabilities say what it offers. It also matches
	// errors.ErrUnsupported.
	ErrNotSupported error = notSupported{}
)

type notSupported struct{}

func (notSupported) Error() string        { return "not supported by this engine" }
func (notSupported) Is(target error) bool { return target == errors.ErrUnsupported }

// Unavailable marks err as transient (errors.Is(err, ErrUnavailable)),
// keeping its message and its own chain. It returns nil for nil and err
// itself if it is marked already.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return unavailableError{err}
}

type unavailableError struct{ err error }

func (e unavailableError) Error() string   { return e.err.Error() }
func (e unavailableError) Unwrap() []error { return []error{e.err, ErrUnavailable} }

// InvalidArgument reports a bad argument, naming it, what it was and what
// was expected: "invalid argument: TTL = 1ns: want a duration >= 100ms". It
// matches ErrInvalidArgument.
func InvalidArgument(arg string, got any, want string) error {
	return fmt.Errorf("%w: %s = %v: want %s", ErrInvalidArgument, arg, got, want)
}
