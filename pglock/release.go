package pglock

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock/driver"
)

// Batched release ("group commit"), as for renewals (batch.go): the
// releases of one session's locks go out together, in one statement for
// up to maxBatch locks (queries.releaseMany), which ends each lease in its
// key's row if it is still this holder's and then unlocks each key,
// telling for each whether the session held it. The first release goes
// out at once; those that arrive while a statement is in flight go
// together in the next (a session runs one statement at a time anyway).
// So releasing N locks at once costs a few statements per session, not N
// statements queued one behind the other on it. Each caller gets its own
// answer: released, not held (ErrLockLost), or the statement's error,
// which leaves the lock held unless the statement went through after all
// (a repeated Release then says so).

// release is one lock's entry in a batch.
type release struct {
	l   *lock
	ctx context.Context
	res chan error // the answer (capacity 1: the caller may be gone)
	// ended: the session ended under the release (set before res is
	// answered), so the caller ends the lease in the row (endLease).
	ended bool
}

// Release ends the lease in the key's row and unlocks the advisory lock on
// its session, in one statement that it may share with other releases on
// the session (one round trip): the next holder waits for its commit
// before it reads the row. A session that ended took the lock with it:
// ErrLockLost. A release that ctx cut short once its statement was sent
// may still finish: a repeated Release then finds the lock released by it,
// and says so with ErrLockLost (the lock is no longer this owner's), as
// the driver contract asks; reporting success would date the release to
// the repeat. One whose ctx ended before its batch was sent is left out of
// the batch: the lock stays held. One whose session ended under it (a reset
// connection) ends the lease in the row from a connection of the pool
// (endLease), so that the next holder need not wait it out, and returns
// nil if that lease was still running (nobody else could have been granted
// the lock meanwhile: the release was this owner's), else ErrLockLost.
func (l *lock) Release(ctx context.Context) error {
	if l.released.Load() {
		return errReleased
	}
	r := &release{l: l, ctx: ctx, res: make(chan error, 1)}
	s := l.s
	s.mu.Lock()
	if s.deadErr != nil {
		s.mu.Unlock()
		l.done()
		if l.endLease(ctx) {
			return nil
		}
		return l.err("release", ctx, errSessionEnded)
	}
	lead := s.rel.push(r)
	s.mu.Unlock()
	if lead {
		s.d.wg.Add(1)
		go drain(s, &s.rel, s.releaseBatch)
	}
	select {
	case err := <-r.res:
		if r.ended && l.endLease(ctx) {
			return nil
		}
		return err
	case <-ctx.Done():
		select {
		case err := <-r.res: // answered meanwhile: the answer
			return err
		default:
			return l.err("release", ctx, ctx.Err())
		}
	}
}

// releaseBatch releases batch's locks in one statement and answers each
// entry. Entries whose caller has given up, and locks released already,
// are answered without being sent; a lock asked twice in one batch is
// sent once, and its second entry told that the first released it.
func (s *session) releaseBatch(batch []*release) {
	send := make([]*release, 0, len(batch))
	var again []*release
	seen := make(map[*lock]bool, len(batch))
	for _, r := range batch {
		switch {
		case r.ctx.Err() != nil:
			r.res <- r.l.err("release", r.ctx, r.ctx.Err())
		case r.l.released.Load():
			r.res <- errReleased
		case seen[r.l]:
			again = append(again, r)
		default:
			seen[r.l] = true
			send = append(send, r)
		}
	}
	defer func() {
		for _, r := range again {
			if r.l.released.Load() {
				r.res <- errReleased
			} else {
				r.res <- r.l.err("release", r.ctx, errors.New("pglock: a release of the same lock at the same time failed"))
			}
		}
	}()
	if len(send) == 0 {
		return
	}
	ctxs := make([]context.Context, len(send))
	keys := make([]int64, len(send))
	tokens := make([]int64, len(send))
	shared := make([]bool, len(send))
	for i, r := range send {
		ctxs[i], keys[i], tokens[i], shared[i] = r.ctx, r.l.key, int64(r.l.token), r.l.mode == driver.Shared
	}
	ctx, cancel := batchContext(ctxs)
	defer cancel()
	var unlocked []int64
	err := s.use(ctx, func(c *pgx.Conn) error {
		s.d.releaseStatements.Add(1)
		var sync string
		if len(send) == 1 { // the usual, uncontended case: a simpler statement
			q := s.d.q.release
			if shared[0] {
				q = s.d.q.releaseShared
			}
			var held bool
			if err := c.QueryRow(ctx, q, keys[0], s.pid, tokens[0]).Scan(&held, &sync); err != nil {
				return err
			}
			if held {
				unlocked = keys
			}
		} else if err := c.QueryRow(ctx, s.d.q.releaseMany, keys, tokens, shared, s.pid).Scan(&unlocked, &sync); err != nil {
			return err
		}
		// Here, not after use returns: a statement that outlives ctx
		// still marks its locks released (a repeated Release says so).
		for _, r := range send {
			r.l.done()
		}
		return nil
	})
	// unlocked is read only if the statement has returned (use may
	// return first, when ctx ends).
	held := map[int64]int{}
	if err == nil {
		for _, k := range unlocked {
			held[k]++
		}
	}
	for _, r := range send {
		switch {
		case errors.Is(err, errSessionEnded):
			r.l.done()
			r.ended = true
			r.res <- r.l.err("release", r.ctx, err)
		case err != nil:
			r.res <- r.l.err("release", r.ctx, err)
		case held[r.l.key] == 0:
			r.res <- fmt.Errorf("pglock: release: the session no longer held the lock: %w", driver.ErrLockLost)
		default:
			held[r.l.key]--
			r.res <- nil
		}
	}
}
