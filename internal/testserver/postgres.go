package testserver

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment variables of the PostgreSQL servers (see scripts/services.sh).
const (
	EnvPostgres  = "DLOCK_TEST_PG"   // postgres:// URL of the shared server
	EnvPGBinDir  = "DLOCK_PG_BINDIR" // directory of initdb, postgres and pg_isready
	defaultPGURL = "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable"
)

// Postgres returns the URL of the shared PostgreSQL server after checking
// that it accepts connections.
func Postgres(tb testing.TB) string {
	tb.Helper()
	raw := lookup(EnvPostgres)
	if raw == "" {
		raw = defaultPGURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		tb.Fatalf("testserver: %s: %v", EnvPostgres, err)
	}
	if err := dial(u.Host, dialTimeout); err != nil {
		unavailable(tb, "shared PostgreSQL %s is not answering (%v); %s", u.Host, err, hint)
	}
	return raw
}

// PostgresURL is the URL of a server started by StartPostgres.
func PostgresURL(p *Proc) string {
	return fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", pgUser(), p.Addr())
}

// StartPostgres starts a dedicated PostgreSQL cluster (initdb in a
// directory of its own, removed when the test ends) on a free loopback
// port, as the user postgres when the test runs as root (initdb and
// postgres refuse root). Its data survives Stop, Kill and Start; Stop is a
// fast shutdown (SIGINT). conf lines ("max_connections = 20") are added to
// postgresql.conf.
func StartPostgres(tb testing.TB, conf ...string) *Proc {
	tb.Helper()
	bin := pgBinDir(tb)
	cred := pgCred(tb)
	// Not tb.TempDir: its parents are private to the test's user.
	dir, err := os.MkdirTemp("", "dlock-pg-")
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			tb.Fatalf("testserver: %v", err)
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", pgUser(),
		"--auth-local=trust", "--auth-host=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("testserver: initdb: %v\n%s", err, out)
	}
	port := freePorts(tb, 1)[0]
	cfg := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"+
		"max_connections = 100\nfsync = off\nfull_page_writes = off\nshared_buffers = 16MB\n", port, dir)
	for _, c := range conf {
		cfg += c + "\n"
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(cfg)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Fatalf("testserver: postgresql.conf: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	isready := filepath.Join(bin, "pg_isready")
	ready := func(addr string) error {
		host, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command(isready, "-q", "-h", host, "-p", port, "-d", "postgres", "-t", "1").CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_isready: %v %s", err, out)
		}
		return nil
	}
	logPath := filepath.Join(dir, "postgres.log")
	p := newProc(tb, "postgres", addr, logPath, []string{filepath.Join(bin, "postgres"), "-D", data}, ready)
	p.stopSig = syscall.SIGINT
	p.cred = cred
	if cred != nil {
		// The server opens its log as its own user.
		if f, err := os.Create(logPath); err == nil {
			f.Close()
			_ = os.Chown(logPath, int(cred.Uid), int(cred.Gid))
		}
	}
	p.Start()
	return p
}

// pgBinDir finds the server binaries: DLOCK_PG_BINDIR, Debian's newest
// /usr/lib/postgresql/N/bin, or initdb's directory on PATH.
func pgBinDir(tb testing.TB) string {
	tb.Helper()
	if d := lookup(EnvPGBinDir); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(ms) > 0 {
		best, bestV := "", -1
		for _, m := range ms {
			v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
			if v > bestV {
				best, bestV = filepath.Dir(m), v
			}
		}
		return best
	}
	if p, err := lookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(r)
		}
	}
	unavailable(tb, "testserver: PostgreSQL's initdb not found (set %s); %s", EnvPGBinDir, hint)
	return ""
}

func pgUser() string {
	if os.Geteuid() == 0 {
		return "postgres"
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "postgres"
}

// RestartPostgres starts a stopped or killed server again, with its data.
// After a kill -9 the old server's children linger for a moment, attached
// to its shared memory, and a new postmaster refuses to start beside them
// ("another postmaster", "pre-existing shared memory block … is still in
// use"): it is started again until they are gone.
func RestartPostgres(tb testing.TB, p *Proc) {
	tb.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		if err := p.launch(); err != nil {
			tb.Fatalf("testserver: start %s: %v", p.name, err)
		}
		err := p.WaitReady(startTimeout)
		if err == nil {
			return
		}
		if p.Running() || !lingering(err.Error()) || time.Now().After(deadline) {
			tb.Fatalf("testserver: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lingering says whether a start failed because the killed server's
// children still hold its shared memory.
func lingering(log string) bool {
	return strings.Contains(log, "another postmaster") || strings.Contains(log, "is still in use")
}

func lookupUser(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
