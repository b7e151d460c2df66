package pglock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dlockio/dlock/driver"
)

// Acquire takes req.Name's advisory lock: first with one try on a session
// the lock may share (no new connection when the lock is free), then, if
// req.Wait, with pg_advisory_lock on a session of its own, which the server
// wakes in queue order when the lock is its turn. A blocking request that
// finds a spare session (one without locks) goes to pg_advisory_lock on it
// at once: one round trip whether the lock is free or not.
func (d *Driver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	if req.Limit > 0 {
		return nil, driver.Validity{}, fmt.Errorf("pglock: semaphores: %w", driver.ErrNotSupported)
	}
	if req.Value != "" {
		return nil, driver.Validity{}, fmt.Errorf("pglock: elections (a value kept with the lock): %w", driver.ErrNotSupported)
	}
	if req.Mode != driver.Exclusive && req.Mode != driver.Shared {
		return nil, driver.Validity{}, driver.InvalidArgument("pglock: Request.Mode", req.Mode, "Exclusive or Shared")
	}
	if req.TTL <= 0 {
		return nil, driver.Validity{}, driver.InvalidArgument("pglock: Request.TTL", req.TTL, "a positive duration")
	}
	if err := d.ensureTable(ctx); err != nil {
		return nil, driver.Validity{}, err
	}
	key := Key(req.Name)
	if req.Wait {
		if s := d.spare(req.TTL); s != nil {
			return d.wait(ctx, s, key, req)
		}
	}
	q := d.q.try
	if req.Mode == driver.Shared {
		q = d.q.tryShared
	}
	var l *lock
	var v driver.Validity
	var err error
	for range 2 { // a shared session may end just as it is picked: once more on another
		var s *session
		if s, err = d.pick(ctx, req.TTL, key); err != nil {
			return nil, driver.Validity{}, d.engineErr(ctx, err)
		}
		if l, v, err = d.grant(ctx, s, key, req, q); !errors.Is(err, errSessionEnded) || ctx.Err() != nil {
			break
		}
	}
	if err != nil || l != nil {
		return l, v, err
	}
	if !req.Wait {
		return nil, driver.Validity{}, driver.ErrNotAcquired
	}
	return d.wait(ctx, d.spare(req.TTL), key, req)
}

// grant runs one granting statement on s, for which key is reserved, and
// makes the lock if it was granted. Neither a lock nor an error: not
// granted (the reservation is dropped).
func (d *Driver) grant(ctx context.Context, s *session, key int64, req driver.Request, q string) (*lock, driver.Validity, error) {
	if q == d.q.try {
		return d.grantBatched(ctx, s, key, req) // grant.go
	}
	var ok, lease bool
	var tok, waitMs int64
	var pid uint32
	since := time.Now()
	err := s.use(ctx, func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, q, grantArgs(key, req)...).Scan(&ok, &tok, &pid, &waitMs, &lease); err != nil {
			return err
		}
		return s.check(pid)
	})
	if errors.Is(err, errNotASession) {
		// The lock, if granted, is held by a server session the pooler
		// gives to others: nothing here can release it.
		s.kill(err)
		d.unreserve(s, key)
		return nil, driver.Validity{}, err
	}
	if err != nil {
		// The advisory lock is not transactional: a statement that failed
		// after taking it (the token's row, a cancellation) leaves it held.
		d.undo(ctx, s, key, req.Mode)
		return nil, driver.Validity{}, d.engineErr(ctx, err)
	}
	if !ok {
		d.unreserve(s, key)
		return nil, driver.Validity{}, nil
	}
	l := d.newLock(s, key, req, tok)
	v, err := l.settle(ctx, since, waitMs)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	return l, v, nil
}

// grantArgs are the parameters of the granting statements.
func grantArgs(key int64, req driver.Request) []any {
	return []any{key, []byte(req.Name), ttlMillis(req.TTL)}
}

// ttlMillis is a TTL in whole milliseconds, never below it.
func ttlMillis(ttl time.Duration) int64 {
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// undo gives key up on s in case a failed statement took it. A session
// that cannot tell is ended, which frees everything it held.
func (d *Driver) undo(ctx context.Context, s *session, key int64, mode driver.Mode) {
	q := d.q.unlock
	if mode == driver.Shared {
		q = d.q.unlockShared
	}
	cctx, cancel := driver.CleanupContext(ctx)
	defer cancel()
	err := s.use(cctx, func(c *pgx.Conn) error {
		var held bool
		return c.QueryRow(cctx, q, key).Scan(&held)
	})
	if err != nil {
		s.kill(err)
	}
	d.unreserve(s, key)
}

// wait takes the lock with a blocking statement on a session of its own:
// s, a spare taken out of its group, or a new one if s is nil.
// The server queues it and wakes it when the lock is its turn; ctx ending
// cancels the statement through pgx (a CancelRequest), and the session is
// then closed, which frees anything it might have been granted meanwhile.
func (d *Driver) wait(ctx context.Context, s *session, key int64, req driver.Request) (driver.Lock, driver.Validity, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.closeCtx, cancel)
	defer stop()
	if s == nil {
		var err error
		if s, err = d.newSession(wctx, req.TTL); err != nil {
			return nil, driver.Validity{}, d.waitErr(ctx, err)
		}
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		s.kill(errClosed)
		return nil, driver.Validity{}, errClosed
	}
	d.waiting[s] = true
	s.keys[key] = 1
	d.mu.Unlock()
	q := d.q.wait
	if req.Mode == driver.Shared {
		q = d.q.waitShared
	}
	confirm := d.q.confirm
	if req.Mode == driver.Shared {
		confirm = d.q.confirmShared
	}
	var ok, lease bool
	var tok, waitMs int64
	var pid uint32
	// The validity runs from the send of the statement that wrote the
	// lease (the server's idle timer restarts after it): the grant's own
	// if it did not wait, else the confirmation's, sent once the grant
	// has reached this client.
	since := time.Now()
	err := s.use(wctx, func(c *pgx.Conn) error {
		if err := c.QueryRow(wctx, q, grantArgs(key, req)...).Scan(&ok, &tok, &pid, &waitMs, &lease); err != nil {
			return err
		}
		if err := s.check(pid); err != nil || lease {
			return err
		}
		since = time.Now()
		return c.QueryRow(wctx, confirm, key, s.pid, tok, ttlMillis(req.TTL)).Scan(&pid)
	})
	if err == nil {
		err = s.check(pid)
	}
	if err != nil {
		s.kill(err)
		return nil, driver.Validity{}, d.waitErr(ctx, err)
	}
	d.mu.Lock()
	delete(d.waiting, s)
	if d.closed {
		d.mu.Unlock()
		s.kill(errClosed)
		return nil, driver.Validity{}, errClosed
	}
	d.group(req.TTL)[s] = true
	d.mu.Unlock()
	s.start()
	l := d.newLock(s, key, req, tok)
	v, err := l.settle(ctx, since, waitMs)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	return l, v, nil
}

// waitErr reports a failed wait: ctx's own error if ctx ended (the
// contract wants it unwrapped), ErrClosed if the driver was closed.
func (d *Driver) waitErr(ctx context.Context, err error) error {
	if errors.Is(err, errNotASession) {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if d.closeCtx.Err() != nil {
		return errClosed
	}
	return d.engineErr(ctx, err)
}

// spare takes a session without locks out of the TTL's group, for a wait
// (which keeps its session busy, so no other lock may share it meanwhile),
// or returns nil.
func (d *Driver) spare(ttl time.Duration) *session {
	d.mu.Lock()
	defer d.mu.Unlock()
	for s := range d.sessions[ttl] {
		if len(s.keys) == 0 && s.alive() {
			delete(d.sessions[ttl], s)
			return s
		}
	}
	return nil
}

func (d *Driver) group(ttl time.Duration) map[*session]bool {
	m := d.sessions[ttl]
	if m == nil {
		m = map[*session]bool{}
		d.sessions[ttl] = m
	}
	return m
}

// sharedSessions is how many sessions the locks of one TTL are spread
// over when they are taken at the same time: a statement holds its session
// for a round trip, so a few let grants and renewals run side by side,
// while each costs a connection, a server process and a goroutine (its
// watcher) however many locks it holds.
const sharedSessions = 4

// pick returns a live session of the TTL's group on which key is not held
// (a session that holds a lock would be granted it again), with key
// reserved on it: an idle one if there is one; else a new one while the
// group has fewer than sharedSessions (counting those being opened); else
// the least busy. It opens one whatever the group's size if key is held on
// every session, and waits for one being opened rather than open another.
func (d *Driver) pick(ctx context.Context, ttl time.Duration, key int64) (*session, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, errClosed
		}
		var best *session
		least, n := 0, 0
		for s := range d.group(ttl) {
			if !s.alive() {
				continue
			}
			n++
			if s.keys[key] != 0 {
				continue
			}
			if u := s.load(); best == nil || u < least {
				best, least = s, u
			}
		}
		opening := d.opening[ttl]
		switch {
		case best != nil && (least == 0 || n+opening >= sharedSessions):
			best.keys[key]++
			d.mu.Unlock()
			return best, nil
		case best == nil && opening > 0:
			opened := d.opened
			d.mu.Unlock()
			select {
			case <-opened:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		d.opening[ttl]++
		d.mu.Unlock()
		return d.open(ctx, ttl, key)
	}
}

// open opens a session for pick, with key reserved on it, and tells the
// callers waiting for it.
func (d *Driver) open(ctx context.Context, ttl time.Duration, key int64) (*session, error) {
	s, err := d.newSession(ctx, ttl)
	d.mu.Lock()
	if d.opening[ttl]--; d.opening[ttl] == 0 {
		delete(d.opening, ttl)
	}
	close(d.opened)
	d.opened = make(chan struct{})
	if err != nil {
		d.mu.Unlock()
		return nil, err
	}
	if d.closed {
		d.mu.Unlock()
		s.kill(errClosed)
		return nil, errClosed
	}
	s.keys[key]++
	d.group(ttl)[s] = true
	d.mu.Unlock()
	s.start()
	return s, nil
}

// unreserve drops key from s. A session left with no lock is kept for the
// next one, unless its group has another such: it is then closed.
func (d *Driver) unreserve(s *session, key int64) {
	d.mu.Lock()
	if s.keys[key]--; s.keys[key] <= 0 {
		delete(s.keys, key)
	}
	spare := false
	if len(s.keys) == 0 {
		for o := range d.sessions[s.group] {
			if o != s && len(o.keys) == 0 && o.alive() {
				spare = true
				break
			}
		}
	}
	if spare {
		delete(d.sessions[s.group], s) // no lock may pick it now
	}
	d.mu.Unlock()
	if spare {
		s.kill(errRetired)
	}
}

// ensureTable creates the token table once per driver, if it is missing.
// A table that exists is only looked up (a user may lack the right to
// create one); creators are serialized by a transaction-scoped advisory
// lock, since concurrent CREATE TABLE IF NOT EXISTS can fail on the
// catalog's unique index.
func (d *Driver) ensureTable(ctx context.Context) error {
	d.mu.Lock()
	done, closed := d.created, d.closed
	d.mu.Unlock()
	if closed {
		return errClosed
	}
	if done {
		return nil
	}
	// The last column added to the table: a table without it is made
	// or completed.
	var exists, complete bool
	err := d.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, EXISTS (SELECT FROM pg_attribute
	WHERE attrelid = to_regclass($1) AND attname = 'readers' AND NOT attisdropped)`,
		ident(d.table)).Scan(&exists, &complete)
	if err == nil && !complete {
		err = pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", Key("dlock/pglock/create-table")); err != nil {
				return err
			}
			q := d.q.create
			if exists {
				q = d.q.addColumns
			}
			_, err := tx.Exec(ctx, q)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("pglock: the token table %s: %w", d.table, d.engineErr(ctx, err))
	}
	d.mu.Lock()
	d.created = true
	d.mu.Unlock()
	return nil
}
