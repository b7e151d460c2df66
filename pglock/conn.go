package pglock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/redact"
)

// News of the driver's connections to the server, for the client's log
// (driver.ConnNotifier). The driver has no one connection: it holds locks
// on sessions of its own and opens them as locks need them. It reports the
// connection lost when a session ends without the driver's asking (its
// connection broke, the server terminated it or shut down; not the
// server's idle_session_timeout, which ends a spare session in the normal
// course and a silent holder's on purpose) or when it fails to open one;
// and restored when it next opens one, which it does for the next lock
// asked for (nothing reconnects in the background: without a session the
// driver holds nothing). Only changes are told. The detail names the
// server's address and process and the reason, never the password.

var _ driver.ConnNotifier = (*Driver)(nil)

// NotifyConn implements driver.ConnNotifier.
func (d *Driver) NotifyConn(f func(up bool, detail string)) {
	d.connMu.Lock()
	d.connNote = f
	d.connMu.Unlock()
}

// tellConn passes a change of the connection to NotifyConn's function,
// with the password scrubbed from detail; a repeat of the state told last
// (up, at first) is not told.
func (d *Driver) tellConn(up bool, detail string) {
	if d.closeCtx.Err() != nil {
		return // the driver's own doing
	}
	d.connMu.Lock()
	defer d.connMu.Unlock()
	if d.connDown == !up {
		return
	}
	d.connDown = !up
	if d.connNote != nil {
		d.connNote(up, redact.Password(detail, d.pool.Config().ConnConfig.Password))
	}
}

// connected tells of a session opened.
func (d *Driver) connected(s *session) {
	d.tellConn(true, fmt.Sprintf("connected to %s (server process %d)", s.net.RemoteAddr(), s.pid))
}

// connectFailed tells of a session that could not be opened: not for a
// ctx that ended (a deadline too short for the server is not its loss).
func (d *Driver) connectFailed(ctx context.Context, host string, port uint16, err error) {
	if ctx.Err() != nil {
		return
	}
	d.tellConn(false, fmt.Sprintf("connecting to %s failed: %v", net.JoinHostPort(host, strconv.Itoa(int(port))), err))
}

// ended ends s, whose connection ended without the driver's asking, and
// tells of it unless the driver had ended s already or the server ended it
// for idleness.
func (s *session) ended(err error) {
	first, lost := s.kill(err)
	var pe *pgconn.PgError
	if !first || errors.As(err, &pe) && pe.Code == "57P05" { // idle_session_timeout
		return
	}
	s.d.tellConn(false, fmt.Sprintf("the session of server process %d at %s ended (%d locks lost with it): %v",
		s.pid, s.net.RemoteAddr(), lost, err))
}
