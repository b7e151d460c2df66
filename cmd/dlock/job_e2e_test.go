package main

// End-to-end tests of what `dlock run`'s lock covers: the command's whole
// process group, for the whole life of dlock, whatever signal dlock gets.

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlockio/dlock/filelock"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/memlock"
)

// strays returns the live processes (zombies aside) whose environment has
// DLOCK_NAME=name: the command dlock ran under the lock name and everything
// it started. Matching on the environment, not on a process group number,
// never touches another program's processes (pids wrap at 32768 here).
func strays(name string) []int {
	want := []byte("\x00DLOCK_NAME=" + name + "\x00")
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), want) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// killStrays cleans up after a test that failed (or a red run): it kills
// whatever is left of the commands run under name.
func killStrays(name string) {
	for _, pid := range strays(name) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// noStrays fails t if a process of the commands run under name is alive.
func noStrays(t *testing.T, name, when string) {
	t.Helper()
	if pids := strays(name); len(pids) > 0 {
		t.Errorf("%s: processes of the command are still running: %v", when, describe(pids))
	}
}

func describe(pids []int) string {
	var b strings.Builder
	for _, pid := range pids {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		b.WriteString(strconv.Itoa(pid) + " (" + strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ") + ") ")
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written, cut short after 2000 bytes (a Go stack
// dump of a dlock dying of SIGQUIT says nothing a test needs).
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 2000 {
		return s.b.String()[:2000] + "…"
	}
	return s.b.String()
}

// dlockProc is a `dlock run` started by a test.
type dlockProc struct {
	cmd    *exec.Cmd
	lines  chan string // the command's stdout, line by line; closed at EOF
	stderr *syncBuffer
	done   chan struct{} // closed once dlock has exited
	err    error         // Wait's result, after done
	took   time.Duration // from Start to exit
}

// startDlock starts the dlock binary with args. The lock name (for the
// cleanup of stray processes) is name.
func startDlock(t *testing.T, name string, args ...string) *dlockProc {
	t.Helper()
	return startDlockEnv(t, nil, name, args...)
}

// startDlockEnv is startDlock with env added to the test's environment.
func startDlockEnv(t *testing.T, env []string, name string, args ...string) *dlockProc {
	t.Helper()
	p := &dlockProc{lines: make(chan string, 100), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(dlockBinary(t), args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stderr = p.stderr
	// Wait returns soon after dlock exits, even while a process it left
	// behind holds its stderr.
	p.cmd.WaitDelay = 200 * time.Millisecond
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() {
		p.err = p.cmd.Wait()
		p.took = time.Since(start)
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		killStrays(name)
		<-p.done
	})
	return p
}

// waitLine waits for the command to print a line starting with prefix and
// returns the rest of it.
func (p *dlockProc) waitLine(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				t.Fatalf("the command's output ended before %q: %v; stderr: %s", prefix, p.err, p.stderr)
			}
			if strings.HasPrefix(l, prefix) {
				return strings.TrimPrefix(l, prefix)
			}
		case <-deadline:
			t.Fatalf("the command did not print %q within %v; stderr: %s", prefix, timeout, p.stderr)
		}
	}
}

// exit waits for dlock to exit and returns its exit code, or 128+N if it
// was killed by signal N.
func (p *dlockProc) exit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("dlock did not exit within %v; stderr: %s", timeout, p.stderr)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitSignalBase + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	t.Fatalf("dlock: %v", p.err)
	return 0
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// TestE2EDlockDeathEndsCommand kills (or QUITs) a dlock whose command and a
// background process of it write to a log, while a second dlock waits for
// the same lock: once the second one's command has started, nothing of the
// first may write any more (issue 12, item 1).
func TestE2EDlockDeathEndsCommand(t *testing.T) {
	for _, tc := range []struct {
		sig      syscall.Signal
		wantExit int // of the first dlock
	}{
		// SIGKILL cannot be caught: the parent-death signal and the guard
		// take the command's group down.
		{syscall.SIGKILL, exitSignalBase + int(syscall.SIGKILL)},
		// SIGQUIT (Ctrl-\) is forwarded; sh dies of it, dlock reports it.
		{syscall.SIGQUIT, exitSignalBase + int(syscall.SIGQUIT)},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			backend := "file://" + t.TempDir()
			log := filepath.Join(t.TempDir(), "log")
			name := "e2e-death-" + randomID()
			first := startDlock(t, name, "run", "--backend", backend, name, "--", "sh", "-c",
				`(while :; do echo first-bg >> "$1"; sleep 0.01; done) &
				until [ -s "$1" ]; do sleep 0.01; done # the background process runs (and ignores SIGQUIT)
				echo started
				while :; do echo first >> "$1"; sleep 0.01; done`, "sh", log)
			first.waitLine(t, "started", 10*time.Second)
			second := startDlock(t, name, "run", "--backend", backend, name, "--", "sh", "-c",
				`echo second >> "$1"; sleep 0.5; echo second-end >> "$1"`, "sh", log)

			first.cmd.Process.Signal(tc.sig)
			if tc.sig == syscall.SIGQUIT {
				// sh runs a background list with SIGQUIT ignored (POSIX): it
				// goes on, and so must the lock.
				select {
				case <-first.done:
					t.Fatalf("dlock exited on SIGQUIT while a process of its command's group runs on; stderr: %s", first.stderr)
				case <-time.After(300 * time.Millisecond):
				}
				first.cmd.Process.Signal(syscall.SIGTERM)
			}
			if code := first.exit(t, 10*time.Second); code != tc.wantExit {
				t.Errorf("first dlock: exit %d, want %d; stderr: %s", code, tc.wantExit, first.stderr)
			}
			if code := second.exit(t, 10*time.Second); code != 0 {
				t.Fatalf("second dlock: exit %d; stderr: %s", code, second.stderr)
			}
			got := readFile(t, log)
			i := strings.Index(got, "second\n")
			if i < 0 || !strings.HasSuffix(got, "second\nsecond-end\n") {
				t.Fatalf("the first command wrote while the second held the lock:\n%s", got)
			}
			if !strings.Contains(got[:i], "first-bg\n") {
				t.Fatalf("the background process never ran:\n%s", got)
			}
			noStrays(t, name, "after both dlocks exited")
		})
	}
}

// TestE2EDlockDeathBeforeGuardArmed kills dlock after the command's first
// process exists but before dlock has told the guard the command's group
// (the test hook stalls dlock there): nothing of the command may run on
// while another dlock holds the lock. Before the gate, the command ran at
// once, forked, and its child wrote on under the second dlock's lock: the
// guard, told nothing, exited and gave the lock up.
func TestE2EDlockDeathBeforeGuardArmed(t *testing.T) {
	for _, backend := range []string{"file://" + t.TempDir(), "redis://" + testserver.Redis(t)[0] + "/?prefix=dlock-cli-test-" + randomID() + ":"} {
		log := filepath.Join(t.TempDir(), "log")
		stalled := filepath.Join(t.TempDir(), "stalled")
		name := "e2e-early-death-" + randomID()
		// --ttl 1s: on Redis the second dlock gets the lock 1 s after the
		// first died, while what the first command left would run on.
		first := startDlockEnv(t, []string{"DLOCK_TEST_STALL_AFTER_START=" + stalled}, name, "run", "--ttl", "1s", "--backend", backend, name, "--", "sh", "-c",
			`(while :; do echo first-bg >> "$1"; sleep 0.01; done) &
			while :; do echo first >> "$1"; sleep 0.01; done`, "sh", log)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(stalled); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dlock never reached the hook; stderr: %s", first.stderr)
			}
			time.Sleep(5 * time.Millisecond) // another process's file: no event to wait on
		}
		time.Sleep(100 * time.Millisecond) // what the command would do in that moment, it has done
		first.cmd.Process.Signal(syscall.SIGKILL)
		first.exit(t, 10*time.Second)
		second := startDlock(t, name, "run", "--backend", backend, name, "--", "sh", "-c",
			`echo second >> "$1"; sleep 0.5; echo second-end >> "$1"`, "sh", log)
		if code := second.exit(t, 20*time.Second); code != 0 {
			t.Fatalf("second dlock: exit %d; stderr: %s", code, second.stderr)
		}
		got := readFile(t, log)
		if i := strings.Index(got, "second\n"); i < 0 || !strings.HasSuffix(got, "second\nsecond-end\n") {
			t.Fatalf("the first command wrote while the second held the lock:\n%s", got)
		}
		noStrays(t, name, "after both dlocks exited")
	}
}

// TestE2ESignalsForwarded sends dlock the signals a user may send besides
// INT, TERM and HUP: each reaches the command, and dlock lives on.
func TestE2ESignalsForwarded(t *testing.T) {
	name := "e2e-fwd-" + randomID()
	p := startDlock(t, name, "run", "--backend", "file://"+t.TempDir(), name, "--", "sh", "-c", `
		for s in USR1 USR2 WINCH ALRM PWR; do trap "echo got-$s" $s; done
		trap "echo got-TERM; exit 3" TERM
		echo started
		while :; do sleep 0.02; done`)
	p.waitLine(t, "started", 10*time.Second)
	for _, sig := range []struct {
		sig  syscall.Signal
		name string
	}{{syscall.SIGUSR1, "USR1"}, {syscall.SIGUSR2, "USR2"}, {syscall.SIGWINCH, "WINCH"}, {syscall.SIGALRM, "ALRM"}, {syscall.SIGPWR, "PWR"}} {
		p.cmd.Process.Signal(sig.sig)
		p.waitLine(t, "got-"+sig.name, 5*time.Second)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLine(t, "got-TERM", 5*time.Second)
	if code := p.exit(t, 5*time.Second); code != 3 {
		t.Fatalf("exit %d, want the command's 3; stderr: %s", code, p.stderr)
	}
}

// TestE2EBackgroundChildKeepsLock: the command's first process exits at
// once, leaving a background process of its group that works for a second.
// The lock is released only after it (issue 12, item 3).
func TestE2EBackgroundChildKeepsLock(t *testing.T) {
	backend := "file://" + t.TempDir()
	log := filepath.Join(t.TempDir(), "log")
	name := "e2e-bg-" + randomID()
	first := startDlock(t, name, "run", "--backend", backend, name, "--", "sh", "-c",
		`(sleep 1; echo bg-done >> "$1") & echo started`, "sh", log)
	first.waitLine(t, "started", 10*time.Second)

	probe := startDlock(t, name, "run", "--backend", backend, "--no-wait", name, "--", "true")
	if code := probe.exit(t, 10*time.Second); code != exitNotAcquired {
		t.Errorf("--no-wait while the background process runs: exit %d, want %d (held)", code, exitNotAcquired)
	}
	second := startDlock(t, name, "run", "--backend", backend, name, "--", "sh", "-c", `echo second >> "$1"`, "sh", log)
	if code := first.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("first dlock: exit %d; stderr: %s", code, first.stderr)
	}
	if first.took < time.Second {
		t.Errorf("first dlock exited after %v, before its background process (1s)", first.took)
	}
	if code := second.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("second dlock: exit %d; stderr: %s", code, second.stderr)
	}
	if got := readFile(t, log); got != "bg-done\nsecond\n" {
		t.Fatalf("log %q: the second command ran while the first one's background process did", got)
	}
}

// removeLockFiles makes filelock report the lock lost (at its next
// renewal, TTL/3).
func removeLockFiles(t *testing.T, dir string) time.Time {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.lock"))
	if len(files) == 0 {
		t.Fatal("no lock file")
	}
	for _, f := range files {
		os.Remove(f)
	}
	return time.Now()
}

// TestE2ELossKillsGroupAfterGrace: on a loss, a process of the group that
// ignores SIGTERM is killed after --grace, although the command's first
// process obeys SIGTERM at once (issue 12, item 3). "started" comes from
// the process that ignores SIGTERM, once it does: a SIGTERM before its trap
// would end it at once. (Before dlock reaped its command's orphans, their
// zombies kept the group alive ~2 s and hid that race.)
func TestE2ELossKillsGroupAfterGrace(t *testing.T) {
	dir := t.TempDir()
	name := "e2e-grace-" + randomID()
	const grace = 500 * time.Millisecond
	p := startDlock(t, name, "run", "--backend", "file://"+dir, "--ttl", "1s", "--grace", grace.String(), name, "--", "sh", "-c",
		`sh -c 'trap "" TERM; echo started; while :; do sleep 0.05; done' & wait`)
	p.waitLine(t, "started", 10*time.Second)
	lost := removeLockFiles(t, dir)
	if code := p.exit(t, 10*time.Second); code != exitLost {
		t.Fatalf("exit %d, want %d; stderr: %s", code, exitLost, p.stderr)
	}
	took := time.Since(lost)
	noStrays(t, name, "when dlock exited after the loss")
	if took < grace {
		t.Errorf("dlock exited %v after the loss, before --grace %v: the TERM-ignoring process cannot have been killed after it", took, grace)
	}
	if !strings.Contains(p.stderr.String(), "SIGKILL in "+grace.String()) {
		t.Errorf("no loss notice: %s", p.stderr)
	}
}

// TestE2ELossWithClosedStderr: dlock's stderr is a pipe nobody reads any
// more (`dlock run … 2>&1 | head`). On a loss dlock must still stop the
// command, and exit 76 rather than die of SIGPIPE (issue 12, item 2).
func TestE2ELossWithClosedStderr(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(t.TempDir(), "survived")
	name := "e2e-pipe-" + randomID()
	cmd := exec.Command(dlockBinary(t), "run", "--backend", "file://"+dir, "--ttl", "1s", "--grace", "5s", name, "--", "sh", "-c",
		`echo started; sleep 5; echo survived > "$1"`, "sh", mark)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.Close() // nobody reads dlock's stderr any more
	t.Cleanup(func() { cmd.Process.Kill(); killStrays(name) })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "started" {
		t.Fatalf("the command did not start: %q", sc.Text())
	}
	removeLockFiles(t, dir)
	for sc.Scan() {
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitLost {
		t.Errorf("want exit %d after the loss, got %v", exitLost, err)
	}
	noStrays(t, name, "when dlock exited after the loss")
	killStrays(name)
	if _, err := os.Stat(mark); err == nil {
		t.Fatal("the command ran to its end after the loss")
	}
}

// TestHeldLockFile: the guard gets a descriptor of the held lock file, and
// nothing when no file lock is held (no lease, another engine's lease, a
// lease unlocked).
func TestHeldLockFile(t *testing.T) {
	if f := heldLockFile(nil); f != nil {
		f.Close()
		t.Fatal("a descriptor without a lease")
	}
	mc, err := memlock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	ml, err := mc.Mutex("held").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Unlock(t.Context())
	if f := heldLockFile(ml); f != nil {
		f.Close()
		t.Fatal("a descriptor while no file lock is held")
	}

	dir := t.TempDir()
	c, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Mutex("held").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f := heldLockFile(l)
	if f == nil {
		t.Fatal("no descriptor for the held lock file")
	}
	defer f.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*.lock"))
	got, err := f.Stat()
	if err != nil || len(files) != 1 {
		t.Fatalf("stat: %v; files %v", err, files)
	}
	if want, err := os.Stat(files[0]); err != nil || !os.SameFile(got, want) {
		t.Fatalf("descriptor of %v, want the lock file %s (%v)", got.Name(), files[0], err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f2 := heldLockFile(l); f2 != nil {
		f2.Close()
		t.Fatal("a descriptor after Unlock")
	}
}

// TestE2EDlockAsPID1: as a container's entry point dlock is PID 1, and the
// orphans of its command's group become its children. It must reap them,
// or their zombies keep the group, and the lock, alive forever.
func TestE2EDlockAsPID1(t *testing.T) {
	bin := dlockBinary(t)
	if err := exec.Command("unshare", "--fork", "--pid", "--mount-proc", "--kill-child", "true").Run(); err != nil {
		t.Skipf("no PID namespace for the test (unshare: %v)", err)
	}
	log := filepath.Join(t.TempDir(), "log")
	name := "e2e-pid1-" + randomID()
	cmd := exec.Command("unshare", "--fork", "--pid", "--mount-proc", "--kill-child", bin, "run", "--backend", "file://"+t.TempDir(), name, "--",
		"sh", "-c", `(sleep 0.5; echo bg-done >> "$1") &`, "sh", log)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second // killing unshare kills the namespace; its output may lag
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); killStrays(name) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dlock as PID 1: %v: %s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("dlock as PID 1 did not exit within 10s of its command's background process (zombies not reaped?)")
	}
	if got := readFile(t, log); got != "bg-done\n" {
		t.Fatalf("log %q, want the background process's line: dlock exited before it", got)
	}
}

// TestE2EStopWithoutTerminal: with no terminal (cron, a script) SIGTSTP to
// dlock stops its command, and dlock goes on renewing the lock (nobody
// would fg it); SIGCONT to dlock continues the command (issue 12, item 4).
func TestE2EStopWithoutTerminal(t *testing.T) {
	backend := "redis://" + testserver.Redis(t)[0]
	log := filepath.Join(t.TempDir(), "ticks")
	name := "e2e-tstp-" + randomID()
	p := startDlock(t, name, "run", "--backend", backend, "--ttl", "1s", name, "--",
		"bash", "-c", `echo started; while :; do echo tick >> "$1"; sleep 0.05; done`, "bash", log)
	p.waitLine(t, "started", 10*time.Second)

	p.cmd.Process.Signal(syscall.SIGTSTP)
	// No event tells that the command has stopped: wait until the log
	// stops growing, then for two TTLs.
	stopped := readFile(t, log)
	for deadline := time.Now().Add(5 * time.Second); ; {
		time.Sleep(200 * time.Millisecond)
		now := readFile(t, log)
		if now == stopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not stop on SIGTSTP to dlock")
		}
		stopped = now
	}
	time.Sleep(2 * time.Second)
	if got := readFile(t, log); got != stopped {
		t.Fatal("the command ran while it should be stopped")
	}
	probe := startDlock(t, name, "run", "--backend", backend, "--no-wait", name, "--", "true")
	if code := probe.exit(t, 10*time.Second); code != exitNotAcquired {
		t.Fatalf("while the command is stopped for 2 TTLs, another dlock: exit %d, want %d (the lock still held)", code, exitNotAcquired)
	}

	p.cmd.Process.Signal(syscall.SIGCONT)
	for deadline := time.Now().Add(5 * time.Second); readFile(t, log) == stopped; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the command did not continue on SIGCONT to dlock")
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.exit(t, 10*time.Second); code != exitSignalBase+int(syscall.SIGTERM) {
		t.Fatalf("exit %d, want %d; stderr: %s", code, exitSignalBase+int(syscall.SIGTERM), p.stderr)
	}
}
