package testserver

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// EnvPgBouncerBin is the path of pgbouncer (default: found on PATH).
const EnvPgBouncerBin = "DLOCK_PGBOUNCER_BIN"

// StartPgBouncer starts a PgBouncer on a free loopback port in front of the
// PostgreSQL server at upstream (host:port), for its database postgres,
// with trust authentication and the given pool_mode ("session",
// "transaction" or "statement"), as the user postgres when the test runs
// as root (pgbouncer refuses root). It is stopped when the test ends.
func StartPgBouncer(tb testing.TB, upstream, mode string) *Proc {
	tb.Helper()
	bin := binary(tb, EnvPgBouncerBin, "pgbouncer")
	host, port, err := net.SplitHostPort(upstream)
	if err != nil {
		tb.Fatalf("testserver: pgbouncer upstream %q: %v", upstream, err)
	}
	cred := pgCred(tb)
	dir, err := os.MkdirTemp("", "dlock-pgbouncer-")
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	listen := freePorts(tb, 1)[0]
	users := filepath.Join(dir, "users.txt")
	conf := filepath.Join(dir, "pgbouncer.ini")
	files := map[string]string{
		users: fmt.Sprintf("%q \"\"\n", pgUser()),
		conf: fmt.Sprintf(`[databases]
postgres = host=%s port=%s dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
default_pool_size = 4
ignore_startup_parameters = extra_float_digits
`, host, port, listen, users, mode),
	}
	for f, body := range files {
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			tb.Fatalf("testserver: %v", err)
		}
	}
	addr := "127.0.0.1:" + strconv.Itoa(listen)
	p := newProc(tb, "pgbouncer", addr, filepath.Join(dir, "pgbouncer.log"), []string{bin, conf},
		func(addr string) error { return dial(addr, dialTimeout) })
	p.stopSig = syscall.SIGINT
	p.cred = cred
	p.Start()
	return p
}

// pgCred is the user PostgreSQL's programs run as: postgres when the test
// runs as root (they refuse root), nil (the test's own user) otherwise.
func pgCred(tb testing.TB) *syscall.Credential {
	tb.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := lookupUser("postgres")
	if err != nil {
		unavailable(tb, "testserver: user postgres (needed to run PostgreSQL's programs as root): %v; %s", err, hint)
	}
	return u
}
