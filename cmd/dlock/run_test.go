package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/memlock"
)

func TestMain(m *testing.M) {
	runNonReapingParent() // exits if the test binary is run as that helper
	// The tests own the environment: a developer's DLOCK_BACKEND must not
	// redirect them.
	os.Unsetenv(envBackend)
	// The end-to-end tests time race-enabled dlock binaries: by default
	// such a binary sleeps 1 s at exit, which their bounds would count.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) { removeBuild(); os.Exit(code) }))
}

// Engines behind the "memtest://NAME" scheme, which the tests register so
// that they can reach into the engine a Run call uses (Drop, Status).
var (
	testEnginesMu sync.Mutex
	testEngines   = map[string]*memlock.Engine{}
)

func init() {
	dlock.Register("noinspect", func(context.Context, *url.URL) (driver.Driver, error) { return bareDriver{}, nil })
	dlock.Register("downtest", func(context.Context, *url.URL) (driver.Driver, error) { return downDriver{}, nil })
	dlock.Register("memtest", func(_ context.Context, u *url.URL) (driver.Driver, error) {
		c, err := testEngine(u.Host).NewClient()
		if err != nil {
			return nil, err
		}
		return c.Driver(), nil
	})
}

func testEngine(name string) *memlock.Engine {
	testEnginesMu.Lock()
	defer testEnginesMu.Unlock()
	e := testEngines[name]
	if e == nil {
		e = memlock.NewEngine()
		testEngines[name] = e
	}
	return e
}

// engine returns a private engine for t and its backend URL.
func engine(t *testing.T) (*memlock.Engine, string) {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name())) + "-" + randomID()
	return testEngine(name), "memtest://" + name
}

type result struct {
	code           int
	err            error
	stdout, stderr string
}

func run(ctx context.Context, args ...string) result {
	var out, errb bytes.Buffer
	err := Run(ctx, args, &out, &errb)
	return result{exitCode(err), err, out.String(), errb.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

func wantCode(t *testing.T, r result, code int, stderrWords ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got %v", code, r)
	}
	for _, w := range stderrWords {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("stderr does not mention %q: %v", w, r)
		}
	}
}

// hold takes name on the engine with a client of its own.
func hold(t *testing.T, e *memlock.Engine, name string) *dlock.Lease {
	t.Helper()
	c, err := e.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l, err := c.Mutex(name).Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func status(t *testing.T, e *memlock.Engine, name string) driver.Status {
	t.Helper()
	c, err := e.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestUsageErrors(t *testing.T) {
	_, b := engine(t)
	for _, tc := range []struct {
		args []string
		word string
	}{
		{[]string{"bogus"}, "unknown command"},
		{[]string{"--nope"}, "unknown flag"},
		{[]string{"run"}, "missing lock NAME"},
		{[]string{"run", "--backend", b, "x"}, "missing command"},
		{[]string{"run", "--backend", b, "--", "true"}, "missing lock NAME before --"},
		{[]string{"run", "--backend", b, "a", "b", "--", "true"}, "exactly one lock NAME"},
		{[]string{"run", "--backend", b, "x", "sh", "-c", "true"}, "unknown shorthand flag"},
		{[]string{"run", "--backend", b, "--ttl", "0", "x", "--", "true"}, "--ttl"},
		{[]string{"run", "--backend", b, "--ttl", "soon", "x", "--", "true"}, "invalid argument"},
		{[]string{"run", "--backend", b, "--ttl", "1ns", "x", "--", "true"}, "--ttl 1ns: want at least 1s"},
		{[]string{"run", "--backend", b, "--ttl", "999ms", "x", "--", "true"}, "--ttl 999ms: want at least 1s"},
		{[]string{"run", "--backend", b, "--wait", "-1s", "x", "--", "true"}, "0 tries once"},
		{[]string{"run", "--backend", b, "--no-wait", "--wait", "0s", "x", "--", "true"}, "contradict"},
		{[]string{"run", "--backend", b, "--grace", "-1s", "x", "--", "true"}, "--grace"},
		{[]string{"run", "--backend", b, "--limit", "0", "x", "--", "true"}, "--limit 0: want a number of permits >= 1"},
		{[]string{"run", "--backend", b, "--limit", "-2", "x", "--", "true"}, "--limit -2"},
		{[]string{"run", "--backend", b, "--limit", "two", "x", "--", "true"}, "invalid argument"},
		{[]string{"run", "--backend", b, "--shared", "--limit", "2", "x", "--", "true"}, "contradict"},
		{[]string{"run", "--backend", b, "--no-wait", "--wait", "1s", "x", "--", "true"}, "contradict"},
		{[]string{"status"}, "one lock NAME"},
		{[]string{"status", "a", "b"}, "one lock NAME"},
		{[]string{"demo", "--workers", "0"}, "--workers"},
		{[]string{"demo", "extra"}, "unknown command"},
		{[]string{"bench", "--cycles", "0"}, "--cycles"},
		{[]string{"version", "x"}, "unknown command"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t.Context(), tc.args...)
			wantCode(t, r, exitUsage, tc.word, "--help")
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"demo", "-h"}, {"bench", "--help"}, {"status", "--help"}, {"version", "--help"}} {
		r := run(t.Context(), args...)
		wantCode(t, r, exitOK)
		if !strings.Contains(r.stdout, "Usage:") {
			t.Fatalf("%q: no usage in %v", args, r)
		}
	}
	r := run(t.Context(), "run", "--help")
	for _, code := range []string{"64", "69", "75", "76", "126", "127", "128+N", "DLOCK_TOKEN", "DLOCK_NAME",
		// What the lock covers (issue 12): processes, loss, signals, death,
		// terminal, job control.
		"process group", "setsid", "SIGKILL", "--grace", "QUIT", "USR1", "WINCH", "SIGPIPE",
		"killed", "guard", "terminal", "Ctrl-C", "Ctrl-Z", "fg", "SIGSTOP", "--wait 0", "mem://"} {
		if !strings.Contains(r.stdout, code) {
			t.Errorf("run --help does not document %s", code)
		}
	}
}

func TestVersion(t *testing.T) {
	r := run(t.Context(), "version")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "dlock ") || !strings.Contains(r.stdout, "file") || !strings.Contains(r.stdout, "mem") {
		t.Fatalf("version: %v", r)
	}
}

func TestBackendMisconfigured(t *testing.T) {
	wantCode(t, run(t.Context(), "run", "--backend", "nope://x", "x", "--", "true"), exitUnavailable, `unknown URL scheme "nope"`, "--backend")
	wantCode(t, run(t.Context(), "run", "--backend", "mem:///a/path", "x", "--", "true"), exitUnavailable, "mem://")
	wantCode(t, run(t.Context(), "status", "--backend", "::", "x"), exitUnavailable, "--backend")
	wantCode(t, run(t.Context(), "demo", "--backend", "nope://"), exitUnavailable, "nope")

	// The environment is read when the flag is absent.
	t.Setenv(envBackend, "nope://from-env")
	wantCode(t, run(t.Context(), "run", "x", "--", "true"), exitUnavailable, "nope://from-env")
}

func TestChildStatus(t *testing.T) {
	e, b := engine(t)
	r := run(t.Context(), "run", "--backend", b, "job", "--", "sh", "-c", `echo "$DLOCK_NAME $DLOCK_TOKEN"; exit 3`)
	wantCode(t, r, 3)
	if r.stdout != "job 1\n" {
		t.Fatalf("child saw %q, want name and token 1", r.stdout)
	}
	if r.stderr != "" {
		t.Fatalf("a failing child's status needs no message from dlock: %v", r)
	}
	if st := status(t, e, "job"); st.Held {
		t.Fatalf("lock still held after the command: %+v", st)
	}

	r = run(t.Context(), "run", "--backend", b, "job", "--", "true")
	wantCode(t, r, exitOK)

	r = run(t.Context(), "run", "--backend", b, "job", "--", "sh", "-c", "kill -TERM $$")
	wantCode(t, r, exitSignalBase+int(syscall.SIGTERM))

	r = run(t.Context(), "run", "--backend", b, "job", "--", "dlock-no-such-command")
	wantCode(t, r, exitNotFound, "dlock-no-such-command")

	f := t.TempDir() + "/not-executable"
	os.WriteFile(f, []byte("#!/bin/sh\n"), 0o600)
	r = run(t.Context(), "run", "--backend", b, "job", "--", f)
	wantCode(t, r, exitCannotExec, "not-executable")

	if st := status(t, e, "job"); st.Held {
		t.Fatalf("lock held after a command that could not start: %+v", st)
	}
}

// TestCommandPathLikeAnOption: a command's path that starts with "-" is
// run, not taken for an option of the start-up gate's exec.
func TestCommandPathLikeAnOption(t *testing.T) {
	_, b := engine(t)
	dir := t.TempDir()
	if err := os.Mkdir(dir+"/-x", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/-x/y", []byte("#!/bin/sh\necho dash-path-ran\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	r := run(t.Context(), "run", "--backend", b, "job", "--", "-x/y")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "dash-path-ran") {
		t.Fatalf("the command did not run: %v", r)
	}
}

func TestNotAcquired(t *testing.T) {
	e, b := engine(t)
	hold(t, e, "busy")

	r := run(t.Context(), "run", "--backend", b, "--no-wait", "busy", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "held elsewhere")

	start := time.Now()
	r = run(t.Context(), "run", "--backend", b, "--wait", "200ms", "busy", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "--wait 200ms")
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Fatalf("--wait 200ms gave up after %v", d)
	}
	if r.stdout != "" {
		t.Fatalf("the command ran without the lock: %v", r)
	}
	if st := status(t, e, "busy"); st.Waiters != 0 {
		t.Fatalf("a timed-out wait left %d waiters queued", st.Waiters)
	}

	// --wait 0 tries once, as its error for a negative value says.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r = run(ctx, "run", "--backend", b, "--wait", "0s", "busy", "--", "echo", "ran")
	wantCode(t, r, exitNotAcquired, "held elsewhere (--wait 0s)")
	if r.stdout != "" {
		t.Fatalf("the command ran without the lock: %v", r)
	}
	r = run(ctx, "run", "--backend", b, "--wait", "0s", "free", "--", "echo", "ran")
	wantCode(t, r, exitOK)
	if r.stdout != "ran\n" {
		t.Fatalf("--wait 0s on a free lock: %v", r)
	}
}

// TestRunRefusesMem: mem:// lives inside one dlock process and cannot keep
// any other dlock out.
func TestRunRefusesMem(t *testing.T) {
	for _, backend := range []string{"mem://", "mem://x"} {
		r := run(t.Context(), "run", "--backend", backend, "job", "--", "echo", "ran")
		wantCode(t, r, exitUnavailable, "cannot keep another dlock process out", "file://")
		if r.stdout != "" {
			t.Fatalf("the command ran: %v", r)
		}
	}
	t.Setenv(envBackend, "mem://")
	wantCode(t, run(t.Context(), "run", "job", "--", "true"), exitUnavailable, "cannot keep another dlock process out")
}

// waitWaiters waits until n waiters are queued; memlock has no event for it.
func waitWaiters(t *testing.T, e *memlock.Engine, name string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if status(t, e, name).Waiters == n {
			return
		}
	}
	t.Fatalf("%q: want %d waiters, have %d", name, n, status(t, e, name).Waiters)
}

func TestInterruptWhileWaiting(t *testing.T) {
	e, b := engine(t)
	hold(t, e, "busy")

	ctx, cancel := context.WithCancelCause(t.Context())
	done := make(chan result, 1)
	go func() { done <- run(ctx, "run", "--backend", b, "busy", "--", "echo", "ran") }()
	waitWaiters(t, e, "busy", 1)

	cancel(signalCause{syscall.SIGINT})
	select {
	case r := <-done:
		wantCode(t, r, exitSignalBase+int(syscall.SIGINT), "interrupted", "nothing left queued")
		if r.stdout != "" {
			t.Fatalf("the command ran: %v", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("dlock run did not exit within 2s of SIGINT while waiting")
	}
	if st := status(t, e, "busy"); st.Waiters != 0 {
		t.Fatalf("an interrupted wait left %d waiters queued", st.Waiters)
	}
}

// lineWriter signals when a line it is written contains want.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newLineWriter(want string) *lineWriter {
	return &lineWriter{want: want, seen: make(chan struct{})}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// startRun runs dlock in the background and waits until its command has
// printed "started".
func startRun(t *testing.T, ctx context.Context, args ...string) (<-chan error, *lineWriter, *lineWriter) {
	t.Helper()
	out, errw := newLineWriter("started"), newLineWriter("\x00")
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, out, errw) }()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("dlock run ended before its command started: exit %d: %v; stderr %s", exitCode(err), err, errw)
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not start within 10s")
	}
	return done, out, errw
}

func TestLossTerminatesCommand(t *testing.T) {
	e, b := engine(t)
	done, out, errw := startRun(t, t.Context(), "run", "--backend", b, "--grace", "5s", "job", "--",
		"sh", "-c", `echo started $DLOCK_TOKEN; sleep 30; echo survived`)
	lost := time.Now()
	if !e.Drop("job") {
		t.Fatal("the lock was not held while the command ran")
	}
	select {
	case err := <-done:
		if code := exitCode(err); code != exitLost {
			t.Fatalf("want exit %d after loss, got %d: %v", exitLost, code, err)
		}
		// The command (sh and its sleep) obeyed SIGTERM: well within the grace.
		if d := time.Since(lost); d > 2*time.Second {
			t.Fatalf("exited %v after the loss", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dlock run did not stop its command within 10s of the loss")
	}
	if strings.Contains(out.String(), "survived") {
		t.Fatalf("the command went on after the loss: %s", out)
	}
	if !strings.Contains(errw.String(), "lost") {
		t.Fatalf("no loss message: %s", errw)
	}
	// The next holder's token is larger.
	l := hold(t, e, "job")
	if l.Token() <= 1 {
		t.Fatalf("next token %d, want > 1", l.Token())
	}
}

func TestLossGraceThenKill(t *testing.T) {
	e, b := engine(t)
	const grace = 300 * time.Millisecond
	done, _, _ := startRun(t, t.Context(), "run", "--backend", b, "--grace", grace.String(), "job", "--",
		"sh", "-c", `trap "" TERM; echo started; while :; do sleep 1; done`)
	lost := time.Now()
	e.Drop("job")
	select {
	case err := <-done:
		if code := exitCode(err); code != exitLost {
			t.Fatalf("want exit %d, got %d: %v", exitLost, code, err)
		}
		if d := time.Since(lost); d < grace || d > grace+2*time.Second {
			t.Fatalf("a command ignoring SIGTERM was stopped %v after the loss, want just after the %v grace", d, grace)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a command ignoring SIGTERM was not killed")
	}
}

// TestSignalsForwarded: the signal that ended Run's context reaches the
// command; with main's relay, so does any other. The relayed signal is
// SIGUSR1, not SIGHUP: a command inherits the signals ignored by its
// parent and a shell cannot trap them, so under nohup (as a CI runner may
// be) a SIGHUP would never reach the script's trap and the test would hang.
func TestSignalsForwarded(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGUSR1} {
		if signal.Ignored(sig) {
			t.Fatalf("the test process ignores %v, so its command would too: run the tests without ignoring it", sig)
		}
	}
	_, b := engine(t)
	script := `trap "echo got-term; exit 7" TERM; trap "echo got-usr1; exit 9" USR1; echo started; while :; do sleep 0.05; done`

	// Without a relay (as in tests), the context's cause is forwarded once.
	ctx, cancel := context.WithCancelCause(t.Context())
	done, out, _ := startRun(t, ctx, "run", "--backend", b, "job1", "--", "sh", "-c", script)
	cancel(signalCause{syscall.SIGTERM})
	if code := exitCode(waitDone(t, done)); code != 7 || !strings.Contains(out.String(), "got-term") {
		t.Fatalf("SIGTERM: exit %d, output %q", code, out)
	}

	// With main's relay every signal is forwarded.
	relay := make(chan os.Signal, 1)
	done, out, _ = startRun(t, withSignals(t.Context(), relay), "run", "--backend", b, "job2", "--", "sh", "-c", script)
	relay <- syscall.SIGUSR1
	if code := exitCode(waitDone(t, done)); code != 9 || !strings.Contains(out.String(), "got-usr1") {
		t.Fatalf("SIGUSR1: exit %d, output %q", code, out)
	}
}

// waitDone waits for a Run started by startRun to return, failing the test
// (instead of hanging it) if it does not within 10 s.
func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("dlock run did not return within 10s")
		return nil
	}
}

func TestStatus(t *testing.T) {
	e, b := engine(t)
	r := run(t.Context(), "status", "--backend", b, "idle")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "held:     no") {
		t.Fatalf("status of a free lock: %v", r)
	}

	l := hold(t, e, "busy")
	c, _ := e.NewClient()
	t.Cleanup(func() { c.Close() })
	go c.Mutex("busy").Lock(t.Context()) // one waiter, cancelled by t.Context at the end
	waitWaiters(t, e, "busy", 1)

	r = run(t.Context(), "status", "--backend", b, "--json", "busy")
	wantCode(t, r, exitOK)
	var st lockStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v in %v", err, r)
	}
	if !st.Held || st.Token == nil || *st.Token != l.Token() || st.Waiters == nil || *st.Waiters != 1 || st.TTLLeft == nil || *st.TTLLeft <= 0 {
		t.Fatalf("status --json = %s", r.stdout)
	}

	r = run(t.Context(), "status", "--backend", b, "busy")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "held:     yes") || !strings.Contains(r.stdout, "waiters:  1") {
		t.Fatalf("status: %v", r)
	}
}

func TestStatusUnsupported(t *testing.T) {
	r := run(t.Context(), "status", "--backend", "noinspect://", "x")
	wantCode(t, r, exitFailure, "cannot report", "--no-wait")
}

// bareDriver implements no optional interface.
type bareDriver struct{}

func (bareDriver) Acquire(context.Context, driver.Request) (driver.Lock, driver.Validity, error) {
	return nil, driver.Validity{}, errors.New("bare: no locks here")
}
func (bareDriver) Close() error { return nil }

func TestEngineFailure(t *testing.T) {
	r := run(t.Context(), "run", "--backend", "noinspect://", "x", "--", "true")
	wantCode(t, r, exitUnavailable, "no locks here", "reachable")
}

// TestUnreachableZooKeeper: zk:// waits for a session for as long as its
// context lets it; no command may hang on an ensemble that is not there,
// with --no-wait, --wait or neither.
func TestUnreachableZooKeeper(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := "zk://" + ln.Addr().String()
	ln.Close() // nobody listens there now
	for _, args := range [][]string{
		{"run", "--no-wait", "--backend", backend, "x", "--", "true"},
		{"run", "--wait", "1s", "--backend", backend, "x", "--", "true"},
		{"status", "--backend", backend, "x"},
		{"list", "--backend", backend},
		{"bench", "--backend", backend, "--cycles", "1", "--workers", "2", "--increments", "1"},
		{"demo", "--backend", backend, "--workers", "2", "--increments", "1"},
	} {
		t.Run(args[0]+" "+args[1], func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 3*openTimeout)
			defer cancel()
			r := run(ctx, args...)
			if ctx.Err() != nil {
				t.Fatalf("%v did not return within %v: %v", args, 3*openTimeout, r)
			}
			wantCode(t, r, exitUnavailable, "no answer within 10s", "reachable")
		})
	}
}

// TestEngineDownWhenWaitEnds: a Lock that rode out a failing engine until
// --wait ended reports the engine's failure (69), not "held elsewhere" (75).
func TestEngineDownWhenWaitEnds(t *testing.T) {
	r := run(t.Context(), "run", "--wait", "300ms", "--backend", "downtest://", "x", "--", "true")
	wantCode(t, r, exitUnavailable, "down: connection refused", "reachable")
	if strings.Contains(r.stderr, "held elsewhere") {
		t.Fatalf("an engine outage reported as a held lock: %v", r)
	}
}

// downDriver's engine is always down.
type downDriver struct{}

func (downDriver) Acquire(context.Context, driver.Request) (driver.Lock, driver.Validity, error) {
	return nil, driver.Validity{}, driver.Unavailable(errors.New("down: connection refused"))
}
func (downDriver) Close() error { return nil }

func TestDemo(t *testing.T) {
	r := run(t.Context(), "demo", "--backend", "mem://", "--workers", "4", "--increments", "25")
	wantCode(t, r, exitOK)
	for _, w := range []string{"counter        100 (want 100): exact", "grants/s", "wait ", "handoff", "tokens ", "strictly increasing"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("demo output lacks %q: %v", w, r)
		}
	}
}

// TestDemoDefault is `dlock demo` with no flags and no servers: it must
// start its own engine.
func TestDemoDefault(t *testing.T) {
	r := run(t.Context(), "demo")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "counter        1000 (want 1000): exact") {
		t.Fatalf("demo: %v", r)
	}
}

func TestBench(t *testing.T) {
	r := run(t.Context(), "bench", "--backend", "mem://", "--backend", "file://"+t.TempDir(), "--cycles", "10", "--workers", "3", "--increments", "5")
	wantCode(t, r, exitOK)
	for _, w := range []string{"mem://", "file://", "uncontended cycles/s", "handoff p99", "exact 15"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("bench output lacks %q: %v", w, r)
		}
	}
}
