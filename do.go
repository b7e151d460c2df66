package dlock

import (
	"context"
	"errors"
)

// Do takes the lock name on c, runs fn while holding it and releases it.
// fn's context is cancelled if the lease is lost (context.Cause tells why)
// or ctx ends. Do returns fn's error joined with the lock's: an error
// matching ErrLockLost if the lease was lost while fn ran, or the release's
// error. If the lock cannot be taken fn does not run. If fn panics, the lock
// is released and the panic goes on.
func Do(ctx context.Context, c *Client, name string, fn func(ctx context.Context, l *Lease) error, opts ...Option) error {
	if c == nil {
		return wrap(name, "do", invalid("client", nil, "a non-nil *dlock.Client"))
	}
	if fn == nil {
		return wrap(name, "do", invalid("fn", nil, "a non-nil function"))
	}
	l, err := c.Mutex(name, opts...).Lock(ctx)
	if err != nil {
		return err
	}
	fctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(l.Context(), func() { cancel(context.Cause(l.Context())) })
	returned := false
	defer func() {
		stop()
		cancel(nil)
		if !returned { // fn panicked or called runtime.Goexit, which goes on
			l.Unlock(context.WithoutCancel(ctx))
		}
	}()
	ferr := fn(fctx, l)
	returned = true
	// Release even if ctx has ended (Unlock bounds the wait).
	return errors.Join(ferr, l.Unlock(context.WithoutCancel(ctx)))
}
