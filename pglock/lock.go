package pglock

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

	lmu       sync.Mutex
	lostFired bool   // markLost ran
	notify    func() // NotifyLost's
}

// newLock makes the lock granted on s, and keeps it among s's held locks
// (loss.go).
func (d *Driver) newLock(s *session, key int64, req driver.Request, tok int64) *lock {
	l := &lock{d: d, s: s, key: key, mode: req.Mode, ttl: req.TTL, token: uint64(tok)}
	s.add(l)
	return l
}

func (l *lock) Token() uint64 { return l.token }

// Lost is closed when the lock's session ends: its connection broke, the
// server terminated it (pg_terminate_backend, idle_session_timeout, a
// shutdown or a crash). The server frees a session's locks when it ends.
// The portable layer uses NotifyLost instead (loss.go), which costs no
// goroutine per lock.
func (l *lock) Lost() <-chan struct{} { return l.s.dead }

// errReleased: an earlier Release, which ctx cut short, released the lock.
var errReleased = fmt.Errorf("pglock: release: %w: released already, by an earlier call that its context cut short", driver.ErrLockLost)

// errLeaseGone: the key's row no longer has this holder's lease, as for a
// holder that ended.
var errLeaseGone = errors.New("pglock: the lease is gone from the key's row")

// settle keeps a fresh grant from being used while a holder that ended
// without releasing (its connection reset, its session terminated, the
// server restarted) may still believe it holds the lock: waitMs, from the
// granting statement, is how long its lease may last. It is waited out,
// renewing every TTL/3 so that the server's idle timer does not end this
// session meanwhile. The validity is then that of the last renewal.
func (l *lock) settle(ctx context.Context, since time.Time, waitMs int64) (driver.Validity, error) {
	v := driver.Validity{Since: since, TTL: l.ttl}
	if waitMs <= 0 {
		return v, nil
	}
	fail := func(err error) (driver.Validity, error) {
		cctx, cancel := driver.CleanupContext(ctx)
		defer cancel()
		_ = l.Release(cctx)
		if ctx.Err() != nil {
			return driver.Validity{}, ctx.Err()
		}
		return driver.Validity{}, err
	}
	end := time.Now().Add(time.Duration(waitMs) * time.Millisecond)
	for {
		step := min(time.Until(end), l.ttl/3)
		if step > 0 {
			t := time.NewTimer(step)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return fail(ctx.Err())
			case <-l.s.dead:
				t.Stop()
				return fail(fmt.Errorf("pglock: %w: its session ended while it waited for a vanished holder's lease", driver.ErrLockLost))
			}
		}
		var err error
		if v, err = l.Renew(ctx); err != nil {
			return fail(err)
		}
		if time.Until(end) <= 0 {
			return v, nil
		}
	}
}

// endLease ends, from a connection of the pool, the lease in the key's row
// of a lock whose session ended under it (a reset connection ends the
// session, and the server frees the advisory lock with it). The lease in
// the row is what a successor waits out, for a holder that may still
// believe it holds: while it runs, nobody else is granted the lock, so the
// lock was still this owner's, and ending it is this owner's release. It
// reports whether it ended a lease still running: then Release returns nil
// (it gave up a lock that was still its own, as the driver contract asks
// of a release that changed something); otherwise the lease had run out or
// was not ours any more, and Release reports the loss. Best effort, within
// ctx: if it fails, the next holder waits the lease out, as for a holder
// that vanished. The statement is owner-checked as release is: the token
// is this grant's alone.
func (l *lock) endLease(ctx context.Context) bool {
	q := l.d.q.endLease
	if l.mode == driver.Shared {
		q = l.d.q.endLeaseShared
	}
	for try := 0; try < 2; try++ { // a pooled connection may have died with the session
		var live bool
		err := l.d.pool.QueryRow(ctx, q, l.key, l.s.pid, int64(l.token)).Scan(&live)
		if err == nil {
			return live
		}
		if errors.Is(err, pgx.ErrNoRows) || ctx.Err() != nil {
			return false
		}
	}
	return false
}

// done marks the lock released, once, and gives its key back to the
// session, which forgets it: its end no longer loses the lock.
func (l *lock) done() {
	if l.released.CompareAndSwap(false, true) {
		l.s.drop(l)
		l.d.unreserve(l.s, l.key)
	}
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
