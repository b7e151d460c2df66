package pglock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock/driver"
)

// Batched renewal ("group commit"). A renewal only needs a statement on
// the lock's session (which restarts the server's idle timer of every lock
// on it) that extends the lease in the key's row if it is still this
// holder's; the renewals of one session's locks go out together, in one
// statement for up to maxBatch locks (queries.renewMany), each entry
// owner-checked on its own exactly as a single renewal is. The first
// renewal goes out at once; those that arrive while it is in flight go
// together in the next statement (a session runs one statement at a time
// anyway). The portable layer puts the renewals of one client on a common
// grid (driver.RenewCoalescer), so a client holding N locks sends a few
// statements per session per renewal interval instead of N, and it waits
// for none of them with a goroutine of its own (driver.AsyncRenewer): a
// session has one sender, while renewals are pending.

var (
	_ driver.RenewCoalescer = (*Driver)(nil)
	_ driver.AsyncRenewer   = (*lock)(nil)
)

// maxBatch bounds the locks of one statement, so that it keeps the server
// busy for a few milliseconds, not for as long as ten thousand take.
const maxBatch = 1000

// CoalescesRenewals implements driver.RenewCoalescer.
func (d *Driver) CoalescesRenewals() bool { return true }

// renewal is one lock's entry in a batch.
type renewal struct {
	l    *lock
	ctx  context.Context
	done func(driver.Validity, error) // called once, by the batch's sender
}

// batchQueue is a session's pending requests of one kind (renewals,
// releases), sent in group commit by one sender at a time (drain). Its
// fields are guarded by the session's mu.
type batchQueue[T any] struct {
	pending []T
	sending bool // a sender runs
}

// push queues e and reports whether the caller must start the sender:
// s.d.wg.Add(1), then go drain. The caller holds s.mu.
func (q *batchQueue[T]) push(e T) (lead bool) {
	q.pending = append(q.pending, e)
	lead = !q.sending
	q.sending = true
	return lead
}

// drain is q's sender: it sends q's entries with send, a batch of at most
// maxBatch at a time, until none is left.
func drain[T any](s *session, q *batchQueue[T], send func([]T)) {
	defer s.d.wg.Done()
	for {
		s.mu.Lock()
		k := min(len(q.pending), maxBatch)
		batch := q.pending[:k:k]
		q.pending = q.pending[k:]
		if k == 0 {
			q.pending = nil
			q.sending = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		send(batch)
	}
}

// Renew implements driver.Lock: RenewAsync, waited for.
func (l *lock) Renew(ctx context.Context) (driver.Validity, error) {
	v, err := driver.WaitRenewal(ctx, l)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return v, l.err("renew", ctx, err)
	}
	return v, err
}

// RenewAsync implements driver.AsyncRenewer: the renewal joins its
// session's next batch.
func (l *lock) RenewAsync(ctx context.Context, done func(driver.Validity, error)) {
	if l.released.Load() {
		done(driver.Validity{}, fmt.Errorf("pglock: renew: %w", driver.ErrLockLost))
		return
	}
	s := l.s
	s.mu.Lock()
	lead := s.renew.push(&renewal{l: l, ctx: ctx, done: done})
	s.mu.Unlock()
	if lead {
		s.d.wg.Add(1)
		go drain(s, &s.renew, s.renewBatch)
	}
}

// renewBatch renews batch in one statement and answers each entry.
func (s *session) renewBatch(batch []*renewal) {
	ctxs := make([]context.Context, len(batch))
	for i, r := range batch {
		ctxs[i] = r.ctx
	}
	ctx, cancel := batchContext(ctxs)
	defer cancel()
	keys := make([]int64, len(batch))
	tokens := make([]int64, len(batch))
	ttls := make([]int64, len(batch))
	shared := make([]bool, len(batch))
	for i, r := range batch {
		keys[i], tokens[i], ttls[i], shared[i] = r.l.key, int64(r.l.token), ttlMillis(r.l.ttl), r.l.mode == driver.Shared
	}
	var since time.Time
	var renewed []int64
	err := s.use(ctx, func(c *pgx.Conn) error {
		var pid uint32
		since = time.Now()
		s.d.renewStatements.Add(1)
		if err := c.QueryRow(ctx, s.d.q.renewMany, keys, tokens, ttls, shared, s.pid).Scan(&pid, &renewed); err != nil {
			return err
		}
		return s.check(pid)
	})
	if errors.Is(err, errNotASession) {
		s.kill(err)
		err = fmt.Errorf("pglock: renew: %w: %w", driver.ErrLockLost, err)
	}
	for _, r := range batch {
		switch {
		case errors.Is(err, driver.ErrLockLost):
			r.done(driver.Validity{}, err)
		case err != nil:
			r.done(driver.Validity{}, r.l.err("renew", r.ctx, err))
		case !slices.Contains(renewed, r.l.key):
			r.done(driver.Validity{}, fmt.Errorf("pglock: renew: %w: %w", driver.ErrLockLost, errLeaseGone))
		default:
			r.done(driver.Validity{Since: since, TTL: r.l.ttl}, nil)
		}
	}
}

// batchContext is the context of a statement sent for many callers: the
// first one's values, not its cancellation, and the latest deadline of
// them all, none if one has none (a caller whose own ctx ends stops
// waiting on its own).
func batchContext(ctxs []context.Context) (context.Context, context.CancelFunc) {
	var dl time.Time
	for _, c := range ctxs {
		d, ok := c.Deadline()
		if !ok {
			dl = time.Time{}
			break
		}
		if d.After(dl) {
			dl = d
		}
	}
	ctx := context.WithoutCancel(ctxs[0])
	if dl.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadline(ctx, dl)
}
