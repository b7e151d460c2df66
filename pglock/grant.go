package pglock

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock/driver"
)

// Batched grants ("group commit"), as for renewals and releases: the
// exclusive try-locks that callers make on one session at the same time
// (many names taken at once, each by a goroutine of its own, which pick
// spreads over a few sessions) go out together, in one statement for up to
// maxBatch of them (queries.tryMany): for each key pg_try_advisory_lock,
// then, for the keys granted, the count in the key's row (the token) and
// the lease, exactly as a single try does, all in one round trip. The
// first goes out at once; those that arrive while a statement is in
// flight go together in the next. A key not granted falls back to the
// caller's waiting path, as a single try does.
//
// Each key's token is still written in the statement that took its lock,
// after taking it, while it is held: tokens strictly increase per name in
// grant order, and are as durable as a single grant's.

// grantReq is one try-lock's entry in a batch.
type grantReq struct {
	key  int64
	req  driver.Request
	ctx  context.Context
	res  chan grantRes // the answer (capacity 1)
	gone atomic.Bool   // set by the sender when it answers, or by the caller when it gives up first
}

// grantRes is a batch's answer to one entry: a lock (granted), or an
// error, or neither (not granted).
type grantRes struct {
	l      *lock
	since  time.Time
	waitMs int64
	err    error
}

// grants are a session's pending try-locks.
type grants struct {
	pending []*grantReq
	sending bool // a sender runs
}

// grantBatched is grant's exclusive try, in its session's next batch: key
// is reserved on s. Neither a lock nor an error: not granted (the
// reservation is dropped). A caller whose ctx ends first returns at once;
// the sender then gives up what the batch granted it.
func (d *Driver) grantBatched(ctx context.Context, s *session, key int64, req driver.Request) (*lock, driver.Validity, error) {
	g := &grantReq{key: key, req: req, ctx: ctx, res: make(chan grantRes, 1)}
	s.mu.Lock()
	s.grant.pending = append(s.grant.pending, g)
	lead := !s.grant.sending
	s.grant.sending = true
	s.mu.Unlock()
	if lead {
		d.wg.Add(1)
		go s.sendGrants()
	}
	var r grantRes
	select {
	case r = <-g.res:
	case <-ctx.Done():
		if g.gone.CompareAndSwap(false, true) {
			return nil, driver.Validity{}, ctx.Err()
		}
		r = <-g.res // answered meanwhile: the sender sends it now
	}
	if r.err != nil || r.l == nil {
		return nil, driver.Validity{}, r.err
	}
	v, err := r.l.settle(ctx, r.since, r.waitMs)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	return r.l, v, nil
}

// answer gives g its result, unless its caller has given up: then false.
func (g *grantReq) answer(r grantRes) bool {
	if !g.gone.CompareAndSwap(false, true) {
		return false
	}
	g.res <- r
	return true
}

// sendGrants sends the session's pending try-locks, a batch at a time,
// until none is left. A key asked twice (which pick's reservations rule
// out) waits for the next batch: one statement grants a key once.
func (s *session) sendGrants() {
	defer s.d.wg.Done()
	for {
		s.mu.Lock()
		var batch, rest []*grantReq
		keys := map[int64]bool{}
		for _, g := range s.grant.pending {
			if len(batch) == maxBatch || keys[g.key] {
				rest = append(rest, g)
				continue
			}
			keys[g.key] = true
			batch = append(batch, g)
		}
		s.grant.pending = rest
		if len(batch) == 0 {
			s.grant.sending = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.grantBatch(batch)
	}
}

// grantBatch runs one tryMany statement for batch and answers each entry.
// Entries whose caller has given up are left out (their reservation
// dropped); a lock granted to a caller that gave up while the statement
// was in flight is released.
func (s *session) grantBatch(batch []*grantReq) {
	d := s.d
	send := batch[:0:0]
	for _, g := range batch {
		if g.ctx.Err() != nil {
			g.answer(grantRes{err: g.ctx.Err()})
			d.unreserve(s, g.key)
			continue
		}
		send = append(send, g)
	}
	if len(send) == 0 {
		return
	}
	ctxs := make([]context.Context, len(send))
	keys := make([]int64, len(send))
	names := make([][]byte, len(send))
	ttls := make([]int64, len(send))
	for i, g := range send {
		ctxs[i], keys[i], names[i], ttls[i] = g.ctx, g.key, []byte(g.req.Name), ttlMillis(g.req.TTL)
	}
	ctx, cancel := batchContext(ctxs)
	defer cancel()
	var since time.Time
	var pid uint32
	var granted, tokens, waits []int64
	err := s.use(ctx, func(c *pgx.Conn) error {
		since = time.Now()
		d.grantStatements.Add(1)
		if len(send) == 1 { // the usual, uncontended case: a simpler statement
			var ok, lease bool
			var tok, waitMs int64
			if err := c.QueryRow(ctx, d.q.try, grantArgs(keys[0], send[0].req)...).Scan(&ok, &tok, &pid, &waitMs, &lease); err != nil {
				return err
			}
			if ok {
				granted, tokens, waits = keys, []int64{tok}, []int64{waitMs}
			}
		} else if err := c.QueryRow(ctx, d.q.tryMany, keys, names, ttls).Scan(&pid, &granted, &tokens, &waits); err != nil {
			return err
		}
		return s.check(pid)
	})
	if err != nil {
		if errors.Is(err, errNotASession) {
			// The locks, if granted, are held by a server session the
			// pooler gives to others: nothing here can release them.
			s.kill(err)
		} else {
			// The advisory locks are not transactional: a statement that
			// failed after taking some (a row, a cancellation) leaves them
			// held.
			d.undoMany(ctx, s, keys)
		}
		for _, g := range send {
			d.unreserve(s, g.key)
			if errors.Is(err, errNotASession) {
				g.answer(grantRes{err: err})
			} else {
				g.answer(grantRes{err: d.engineErr(g.ctx, err)})
			}
		}
		return
	}
	type grant struct{ tok, waitMs int64 }
	got := make(map[int64]grant, len(granted))
	for i, k := range granted {
		got[k] = grant{tokens[i], waits[i]}
	}
	for _, g := range send {
		gr, ok := got[g.key]
		if !ok {
			d.unreserve(s, g.key)
			g.answer(grantRes{})
			continue
		}
		l := d.newLock(s, g.key, g.req, gr.tok)
		if !g.answer(grantRes{l: l, since: since, waitMs: gr.waitMs}) {
			// Its caller is gone: the lock is released as any other.
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				cctx, cancel := driver.CleanupContext(g.ctx)
				defer cancel()
				_ = l.Release(cctx)
			}()
		}
	}
}

// undoMany gives keys up on s in case a failed statement took them, or
// one cut short by ctx went through after all (it runs after that
// statement, which holds the session till it ends): the leases it wrote
// are ended and the keys unlocked, so the next holder need not wait them
// out. A session that cannot tell is ended, which frees everything it
// held.
func (d *Driver) undoMany(ctx context.Context, s *session, keys []int64) {
	cctx, cancel := driver.CleanupContext(ctx)
	defer cancel()
	err := s.use(cctx, func(c *pgx.Conn) error {
		_, err := c.Exec(cctx, d.q.untryMany, keys, s.pid)
		return err
	})
	if err != nil {
		s.kill(err)
	}
}
