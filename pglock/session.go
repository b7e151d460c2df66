package pglock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// A session is one connection of the driver's own, on which it holds
// session-level advisory locks: many locks with the same TTL share one. It
// never goes back to the pool: a pooled connection would carry its locks to
// its next user.
//
// The server's idle_session_timeout (PostgreSQL 14 and later) is set to the
// TTL, so a holder that stops renewing (any statement on the session renews
// every lock on it) is cut off by the server and its locks freed.
//
// While nobody uses the connection a watcher goroutine reads from it, so
// that the session's end (pg_terminate_backend, the idle timeout, a server
// shutdown, a broken connection) is seen at once and reported through dead
// and to each lock it holds (loss.go): one goroutine per session, none per
// lock.
type session struct {
	d     *Driver
	conn  *pgx.Conn
	ttl   time.Duration // its idle_session_timeout, 0 on servers without it
	pid   uint32        // its server process (pg_backend_pid), which must never change
	group time.Duration // the TTL its locks asked for: Driver.sessions' key
	net   net.Conn

	turn chan struct{} // holding it is using conn (capacity 1)
	wake chan struct{} // tells the watcher it may read again

	mu       sync.Mutex
	users    int  // callers using or waiting for conn
	watching bool // the watcher is reading
	started  bool // the watcher runs
	keys     map[int64]int
	held     map[*lock]struct{}   // the locks granted on it and not released (loss.go)
	renew    batchQueue[*renewal] // its locks' renewals (batch.go)
	rel      batchQueue[*release] // its locks' releases (release.go)
	grant    grants               // try-locks on it (grant.go)
	deadErr  error
	dead     chan struct{} // closed when the session has ended
}

// newSession opens a connection with the pool's configuration and sets the
// session's timeouts.
func (d *Driver) newSession(ctx context.Context, ttl time.Duration) (*session, error) {
	pc := d.pool.Config()
	cc := pc.ConnConfig.Copy()
	// A cancelled statement is cancelled by the server (a CancelRequest),
	// which keeps the connection, and the other locks on it, alive; only a
	// server that does not answer within cancelWait loses the connection.
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelWait}
	}
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cc); err != nil {
			return nil, err
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		d.connectFailed(ctx, cc.Host, cc.Port, err)
		return nil, err
	}
	if pc.AfterConnect != nil {
		if err := pc.AfterConnect(ctx, conn); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	s := &session{
		d: d, conn: conn, net: conn.PgConn().Conn(),
		turn: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		keys: map[int64]int{}, held: map[*lock]struct{}{}, dead: make(chan struct{}), group: ttl,
	}
	if err := s.setup(ctx, ttl); err != nil {
		s.kill(err)
		return nil, err
	}
	d.connected(s)
	return s, nil
}

// setup sets idle_session_timeout where the server has it, and
// client_connection_check_interval, so that a backend waiting for a lock
// on behalf of a vanished client leaves the queue within a second instead
// of holding up the waiters behind it; and prepares the renewal statement.
func (s *session) setup(ctx context.Context, ttl time.Duration) error {
	if err := s.conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&s.pid); err != nil {
		return err
	}
	v, _ := strconv.Atoi(s.conn.PgConn().ParameterStatus("server_version_num"))
	if v == 0 {
		// Older servers report server_version only.
		major, _, _ := cutNumber(s.conn.PgConn().ParameterStatus("server_version"))
		v = major * 10000
	}
	if v >= 140000 {
		ms := (ttl + time.Millisecond - 1) / time.Millisecond // never below the TTL
		var pid uint32
		if err := s.conn.QueryRow(ctx, "SELECT pg_backend_pid() FROM set_config('idle_session_timeout', $1, false)",
			strconv.FormatInt(int64(ms), 10)).Scan(&pid); err != nil {
			return err
		}
		if err := s.check(pid); err != nil {
			return err
		}
		s.ttl = ttl
		// Not every platform has it (Linux does); without it the backend
		// notices when it is granted the lock and fails to answer.
		_, _ = s.conn.Exec(ctx, "SELECT set_config('client_connection_check_interval', '1000', false)")
	}
	// Prepared now, so that the session's first batch of renewals is one
	// round trip, not two (batch.go).
	_, err := s.conn.Prepare(ctx, s.d.q.renewMany, s.d.q.renewMany)
	return err
}

// check compares the server process a statement ran on with the
// session's: a pooler in transaction or statement mode (PgBouncer) runs a
// connection's statements on any of its server connections, which breaks
// session-level locks.
func (s *session) check(pid uint32) error {
	if pid == s.pid {
		return nil
	}
	return fmt.Errorf("%w (server process %d, then %d): a pooler in transaction or statement mode (PgBouncer?) "+
		"is between the driver and PostgreSQL; session-level advisory locks need a direct connection or session pooling",
		errNotASession, s.pid, pid)
}

// errNotASession: one connection's statements ran in different server
// sessions.
var errNotASession = errors.New("pglock: the connection is not one server session")

func cutNumber(s string) (n int, rest string, ok bool) {
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(s[:i])
	return n, s[i:], err == nil
}

// start runs the watcher.
// start runs the watcher, once.
func (s *session) start() {
	s.mu.Lock()
	started := s.started
	s.started = true
	s.mu.Unlock()
	if !started {
		s.d.wg.Add(1)
		go s.watch()
	}
	s.kick()
}

func (s *session) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// watch reads from the idle connection until a caller wants it; anything
// but the deadline a caller sets to interrupt it means the session ended.
func (s *session) watch() {
	defer s.d.wg.Done()
	for {
		select {
		case <-s.wake:
		case <-s.dead:
			return
		}
		s.turn <- struct{}{}
		s.mu.Lock()
		if s.users > 0 {
			s.mu.Unlock()
			<-s.turn
			continue
		}
		s.watching = true
		s.mu.Unlock()
		err := s.conn.PgConn().WaitForNotification(context.Background())
		s.mu.Lock()
		s.watching = false
		_ = s.net.SetReadDeadline(time.Time{})
		s.mu.Unlock()
		closed := s.conn.IsClosed()
		<-s.turn
		var ne net.Error
		switch {
		case err == nil: // a NOTIFY: keep watching
			s.kick()
		case errors.As(err, &ne) && ne.Timeout() && !closed:
			// Interrupted by a caller: it kicks us when done.
		default:
			s.ended(err)
			return
		}
	}
}

// use runs fn with the connection to itself, and returns when fn does or
// when ctx ends, whichever is first: fn, given ctx, then has its statement
// cancelled through pgx and finishes in the background, still owning the
// connection. A connection that fn leaves closed ends the session.
func (s *session) use(ctx context.Context, fn func(*pgx.Conn) error) error {
	s.mu.Lock()
	if s.deadErr != nil {
		s.mu.Unlock()
		return errSessionEnded
	}
	s.users++
	if s.watching {
		_ = s.net.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := func() {
		s.mu.Lock()
		s.users--
		idle := s.users == 0
		s.mu.Unlock()
		if idle {
			s.kick()
		}
	}
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		done()
		return ctx.Err()
	case <-s.dead:
		done()
		return errSessionEnded
	}
	result := make(chan error, 1)
	s.d.wg.Add(1)
	go func() {
		defer s.d.wg.Done()
		defer done()
		err := fn(s.conn)
		closed := s.conn.IsClosed()
		<-s.turn
		if closed {
			s.ended(err)
			err = errors.Join(errSessionEnded, err)
		}
		result <- err
	}()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errSessionEnded: the session, and every lock it held, is gone.
var errSessionEnded = errors.New("pglock: session ended")

// kill ends the session: dead is closed, its locks are marked lost, and its
// connection is closed (the server frees its locks when it sees that). Callers that might be
// writing on the connection meanwhile are ending it anyway.
// It reports whether this call ended the session, and how many locks
// were lost with it.
func (s *session) kill(cause error) (first bool, lost int) {
	s.mu.Lock()
	if s.deadErr != nil {
		s.mu.Unlock()
		return false, 0
	}
	if cause == nil {
		cause = errSessionEnded
	}
	s.deadErr = cause
	close(s.dead)
	s.mu.Unlock()
	lost = s.loseAll()
	// A Terminate message first, so that the server ends the session
	// quietly instead of logging a lost client (a broken connection just
	// fails the write).
	_ = s.net.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, _ = s.net.Write([]byte{'X', 0, 0, 0, 4})
	_ = s.net.Close()
	s.d.forget(s)
	return true, lost
}

// load is how many callers use or wait for the connection, try-locks
// waiting for their batch (grant.go) included.
func (s *session) load() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users + len(s.grant.pending)
}

func (s *session) alive() bool {
	select {
	case <-s.dead:
		return false
	default:
		return true
	}
}
