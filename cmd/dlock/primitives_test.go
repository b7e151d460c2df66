package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/memlock"
)

func newClient(t *testing.T, e *memlock.Engine) *dlock.Client {
	t.Helper()
	c, err := e.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRunShared: --shared runs alongside another reader, not alongside a
// writer; a plain run is the writer.
func TestRunShared(t *testing.T) {
	e, b := engine(t)
	r1, err := newClient(t, e).RWMutex("catalog").RLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r := run(t.Context(), "run", "--backend", b, "--shared", "--no-wait", "catalog", "--", "sh", "-c", `echo "$DLOCK_TOKEN"`)
	wantCode(t, r, exitOK)
	if r.stdout != fmt.Sprintf("%d\n", r1.Token()+1) {
		t.Fatalf("reader beside a reader saw token %q, want %d", r.stdout, r1.Token()+1)
	}
	r = run(t.Context(), "run", "--backend", b, "--no-wait", "catalog", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "held elsewhere")
	if r.stdout != "" {
		t.Fatalf("a writer ran beside a reader: %v", r)
	}
	r1.Unlock(t.Context())

	w, err := newClient(t, e).Mutex("catalog").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = run(t.Context(), "run", "--backend", b, "--shared", "--no-wait", "catalog", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "held elsewhere")
	w.Unlock(t.Context())

	st := status(t, e, "catalog")
	if st.Held {
		t.Fatalf("lock held after the commands: %+v", st)
	}
}

// TestRunLimit: --limit N runs while fewer than N hold, refuses a run that
// disagrees on N, and status shows the permits in use.
func TestRunLimit(t *testing.T) {
	e, b := engine(t)
	sem := newClient(t, e).Semaphore("api", 2)
	p1, err := sem.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r := run(t.Context(), "run", "--backend", b, "--limit", "2", "--no-wait", "api", "--", "echo", "ran")
	wantCode(t, r, exitOK)
	if r.stdout != "ran\n" {
		t.Fatalf("one of 2 permits held: %v", r)
	}
	r = run(t.Context(), "run", "--backend", b, "--limit", "3", "--no-wait", "api", "--", "echo", "ran")
	wantCode(t, r, exitUsage, "Limit", "2 permits")

	p2, err := sem.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = run(t.Context(), "run", "--backend", b, "--limit", "2", "--no-wait", "api", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "held elsewhere")

	r = run(t.Context(), "status", "--backend", b, "api")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "permits:  2 of 2 in use") {
		t.Fatalf("status of a full semaphore: %v", r)
	}
	r = run(t.Context(), "status", "--backend", b, "--json", "api")
	wantCode(t, r, exitOK)
	var js lockStatus
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil {
		t.Fatalf("status --json: %v in %v", err, r)
	}
	if js.Holders == nil || *js.Holders != 2 || js.Limit == nil || *js.Limit != 2 || js.Mode == nil || *js.Mode != "exclusive" {
		t.Fatalf("status --json of a full semaphore = %s", r.stdout)
	}
	p1.Unlock(t.Context())
	p2.Unlock(t.Context())
}

// TestElect: elect runs the command while leading, with the term as
// DLOCK_TOKEN and the value for everyone to see; leader shows it; the
// next candidate leads when the command ends.
func TestElect(t *testing.T) {
	e, b := engine(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	obs, err := newClient(t, e).Election("svc").Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if l := <-obs; l != (dlock.Leader{}) {
		t.Fatalf("leader before any campaign: %+v", l)
	}
	done := make(chan result, 1)
	go func() {
		done <- run(t.Context(), "elect", "--backend", b, "--value", "node-a", "svc", "--",
			"sh", "-c", `echo "term $DLOCK_TOKEN"; read x < "$0"`, fifo)
	}()
	var lead dlock.Leader
	select {
	case lead = <-obs:
	case r := <-done:
		t.Fatalf("elect ended before leading: %v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("elect did not lead within 10s")
	}
	if lead.Value != "node-a" || lead.Term == 0 {
		t.Fatalf("leader while elect runs: %+v", lead)
	}
	r := run(t.Context(), "leader", "--backend", b, "svc")
	wantCode(t, r, exitOK)
	if want := fmt.Sprintf("leader: node-a (term %d)\n", lead.Term); r.stdout != want {
		t.Fatalf("leader printed %q, want %q", r.stdout, want)
	}
	r = run(t.Context(), "elect", "--backend", b, "--no-wait", "svc", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "held elsewhere")

	if err := os.WriteFile(fifo, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = <-done
	wantCode(t, r, exitOK)
	if want := fmt.Sprintf("term %d\n", lead.Term); r.stdout != want {
		t.Fatalf("elect's command printed %q, want %q", r.stdout, want)
	}
	r = run(t.Context(), "leader", "--backend", b, "--json", "svc")
	wantCode(t, r, exitOK)
	var js leaderJSON
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil || js.Leader != nil || js.Term != nil || js.Name != "svc" {
		t.Fatalf("leader --json after the command ended = %s (%v)", r.stdout, err)
	}
}

// TestLeaderWatch: leader --watch prints every change until interrupted.
func TestLeaderWatch(t *testing.T) {
	e, b := engine(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Run(ctx, []string{"leader", "--backend", b, "--watch", "svc"}, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	lines := bufio.NewScanner(pr)
	next := func() string {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("leader --watch ended: %v", lines.Err())
		}
		return lines.Text()
	}
	if l := next(); l != "no leader" {
		t.Fatalf("first line %q, want no leader", l)
	}
	lead, err := newClient(t, e).Election("svc").Campaign(t.Context(), "node-b")
	if err != nil {
		t.Fatal(err)
	}
	if l, want := next(), fmt.Sprintf("leader: node-b (term %d)", lead.Term()); l != want {
		t.Fatalf("line %q, want %q", l, want)
	}
	lead.Resign(t.Context())
	if l := next(); l != "no leader" {
		t.Fatalf("line %q after resigning, want no leader", l)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	select {
	case err := <-done:
		if exitCode(err) == exitOK {
			t.Fatalf("leader --watch interrupted exited 0")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("leader --watch still running 5s after its context ended")
	}
}

// TestElectUnsupported: an engine without elections is a clear usage
// error for elect and leader.
func TestElectUnsupported(t *testing.T) {
	dlock.Register("noelect", func(context.Context, *url.URL) (driver.Driver, error) { return bareDriver{}, nil })
	r := run(t.Context(), "elect", "--backend", "noelect://", "--no-wait", "x", "--", "true")
	wantCode(t, r, exitUsage, "not supported", "noelect://")
	r = run(t.Context(), "leader", "--backend", "noelect://", "x")
	wantCode(t, r, exitUnavailable, "does not offer elections")
}

// TestList: list shows the locks under a prefix with their holders, as a
// table and as JSON, and says so when the driver cannot list.
func TestList(t *testing.T) {
	e, b := engine(t)
	c := newClient(t, e)
	a, err := c.Mutex("jobs/a").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unlock(t.Context())
	r1, err := c.RWMutex("jobs/b").RLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Unlock(t.Context())
	p1, err := c.Semaphore("jobs/c", 3).Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Unlock(t.Context())
	x, err := c.Mutex("other").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Unlock(t.Context())

	r := run(t.Context(), "list", "--backend", b, "jobs/")
	wantCode(t, r, exitOK)
	for _, want := range []string{`"jobs/a"`, `"jobs/b"`, "1 readers", `"jobs/c"`, "1 of 3 permits"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("list jobs/ does not show %s:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "other") {
		t.Errorf("list jobs/ shows a lock outside the prefix:\n%s", r.stdout)
	}
	r = run(t.Context(), "list", "--backend", b, "--json")
	wantCode(t, r, exitOK)
	var js []lockStatus
	if err := json.Unmarshal([]byte(r.stdout), &js); err != nil {
		t.Fatalf("list --json: %v in %v", err, r)
	}
	var names []string
	for _, l := range js {
		names = append(names, l.Name)
	}
	if strings.Join(names, ",") != "jobs/a,jobs/b,jobs/c,other" {
		t.Errorf("list --json names = %q", names)
	}
	r = run(t.Context(), "list", "--backend", b, "none/")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "no locks") {
		t.Errorf("list of an empty prefix: %v", r)
	}
	r = run(t.Context(), "list", "--backend", b, "a", "b")
	wantCode(t, r, exitUsage, "at most one PREFIX")

	dlock.Register("nolist", func(context.Context, *url.URL) (driver.Driver, error) { return bareDriver{}, nil })
	r = run(t.Context(), "list", "--backend", "nolist://")
	wantCode(t, r, exitFailure, "cannot list")
}
