package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock/driver"
)

// lock is one granted advisory lock, held by its session.
type lock struct {
	d     *Driver
	s     *session
	key   int64
	mode  driver.Mode
	ttl   time.Duration
	token uint64

	released atomic.Bool
}

func (d *Driver) newLock(s *session, key int64, req driver.Request, tok int64) *lock {
	return &lock{d: d, s: s, key: key, mode: req.Mode, ttl: req.TTL, token: uint64(tok)}
}

func (l *lock) Token() uint64 { return l.token }

// Lost is closed when the lock's session ends: its connection broke, the
// server terminated it (pg_terminate_backend, idle_session_timeout, a
// shutdown or a crash). The server frees a session's locks when it ends.
func (l *lock) Lost() <-chan struct{} { return l.s.dead }

// Renew runs a statement on the lock's session, which restarts the server's
// idle timer of every lock on it. A live session holds its locks: only
// Release gives one up.
func (l *lock) Renew(ctx context.Context) (driver.Validity, error) {
	if l.released.Load() {
		return driver.Validity{}, fmt.Errorf("pglock: renew: %w", driver.ErrLockLost)
	}
	since := time.Now()
	err := l.s.use(ctx, func(c *pgx.Conn) error { return l.s.renew(ctx, c) })
	if errors.Is(err, errNotASession) {
		l.s.kill(err)
		return driver.Validity{}, fmt.Errorf("pglock: renew: %w: %w", driver.ErrLockLost, err)
	}
	if err != nil {
		return driver.Validity{}, l.err("renew", ctx, err)
	}
	return driver.Validity{Since: since, TTL: l.ttl}, nil
}

// Release unlocks the advisory lock on its session. A session that ended
// took the lock with it: ErrLockLost. An unlock that ctx cut short may
// still finish: a repeated Release then finds the lock released.
func (l *lock) Release(ctx context.Context) error {
	if l.released.Load() {
		return nil
	}
	q := l.d.q.unlock
	if l.mode == driver.Shared {
		q = l.d.q.unlockShared
	}
	held := true
	err := l.s.use(ctx, func(c *pgx.Conn) error {
		if l.released.Load() {
			return nil
		}
		if err := c.QueryRow(ctx, q, l.key).Scan(&held); err != nil {
			return err
		}
		l.done()
		return nil
	})
	if errors.Is(err, errSessionEnded) {
		l.done()
		return l.err("release", ctx, err)
	}
	if err != nil {
		return l.err("release", ctx, err)
	}
	if !held {
		return fmt.Errorf("pglock: release: the session no longer held the lock: %w", driver.ErrLockLost)
	}
	return nil
}

// done marks the lock released, once, and gives its key back to the session.
func (l *lock) done() {
	if l.released.CompareAndSwap(false, true) {
		l.d.unreserve(l.s, l.key)
	}
}

// renew runs the renewal statement on s's connection c and checks that it
// ran in the session.
func (s *session) renew(ctx context.Context, c *pgx.Conn) error {
	var pid uint32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return err
	}
	return s.check(pid)
}

// err reports a failed renewal or release: the session's end is the
// lock's loss; anything else may pass.
func (l *lock) err(op string, ctx context.Context, err error) error {
	if errors.Is(err, errSessionEnded) {
		l.s.mu.Lock()
		cause := l.s.deadErr
		l.s.mu.Unlock()
		return fmt.Errorf("pglock: %s: %w (%w)", op, driver.ErrLockLost, cause)
	}
	return fmt.Errorf("pglock: %s: %w", op, l.d.engineErr(ctx, err))
}
