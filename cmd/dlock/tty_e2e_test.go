package main

// End-to-end tests of `dlock run` on a terminal: a shell with job control
// runs dlock on a pseudo-terminal, as a user would.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/dlockio/dlock/internal/testserver"
)

// term is a program running on a pseudo-terminal, as its session leader.
type term struct {
	t    *testing.T
	ptmx *os.File
	cmd  *exec.Cmd

	mu      sync.Mutex
	out     bytes.Buffer
	changed chan struct{} // closed and replaced on every read
	readEnd chan struct{}
}

func startTerm(t *testing.T, argv ...string) *term {
	t.Helper()
	tm := &term{t: t, changed: make(chan struct{}), readEnd: make(chan struct{})}
	tm.cmd = exec.Command(argv[0], argv[1:]...)
	tm.cmd.Env = append(os.Environ(), "PS1=$ ", "TERM=dumb", "HISTFILE=/dev/null")
	ptmx, err := pty.StartWithSize(tm.cmd, &pty.Winsize{Rows: 50, Cols: 500})
	if err != nil {
		t.Fatal(err)
	}
	tm.ptmx = ptmx
	go func() {
		defer close(tm.readEnd)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			close(tm.changed)
			tm.changed = make(chan struct{})
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		// Everything on the terminal is in the program's session (jobs,
		// dlock's command and guard): the terminal reads EOF once all of
		// it is gone.
		killSession(tm.cmd.Process.Pid)
		tm.cmd.Wait()
		<-tm.readEnd
		ptmx.Close()
	})
	return tm
}

// sessionProcs describes the processes of session sid, for failures.
func sessionProcs(sid int) string {
	var b strings.Builder
	for _, st := range sessionStats(sid) {
		b.WriteString(st + "\n")
	}
	return b.String()
}

// sessionStats returns "pid ppid pgrp state comm" of the processes of
// session sid.
func sessionStats(sid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...
		i := bytes.LastIndexByte(stat, ')')
		j := bytes.IndexByte(stat, '(')
		if f := strings.Fields(string(stat[i+1:])); i > 0 && j > 0 && len(f) > 3 && f[3] == strconv.Itoa(sid) {
			out = append(out, strings.Join([]string{e.Name(), f[1], f[2], f[0], string(stat[j+1 : i])}, " "))
		}
	}
	return out
}

// killSession kills every process of the session sid.
func killSession(sid int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...
		i := bytes.LastIndexByte(stat, ')')
		if f := strings.Fields(string(stat[i+1:])); i > 0 && len(f) > 3 && f[3] == strconv.Itoa(sid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// shell starts an interactive bash (job control on) on a terminal.
func shell(t *testing.T) *term {
	t.Helper()
	tm := startTerm(t, "bash", "--norc", "--noprofile", "-i")
	tm.expect(`\$ $`, 0, 10*time.Second)
	return tm
}

func (tm *term) send(s string) {
	tm.t.Helper()
	if _, err := tm.ptmx.WriteString(s); err != nil {
		tm.t.Fatal(err)
	}
}

// mark returns the current end of the output, for expect to search after.
func (tm *term) mark() int {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.Len()
}

// expect waits until the output after offset from matches re and returns the
// offset just past the match.
func (tm *term) expect(re string, from int, timeout time.Duration) int {
	tm.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		tm.mu.Lock()
		out := tm.out.Bytes()[from:]
		loc := rx.FindIndex(out)
		changed := tm.changed
		tm.mu.Unlock()
		if loc != nil {
			return from + loc[1]
		}
		select {
		case <-changed:
		case <-deadline:
			tm.t.Fatalf("terminal: no %q within %v in:\n%s\nprocesses on the terminal (pid ppid pgrp state comm):\n%s",
				re, timeout, tm.output(from), sessionProcs(tm.cmd.Process.Pid))
		}
	}
}

func (tm *term) output(from int) string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return string(tm.out.Bytes()[from:])
}

// readyLine matches the command's "ready" line, not the echo of the
// command line typed.
const readyLine = `\nready\r?\n`

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func runLine(bin string, args ...string) string {
	q := []string{shellQuote(bin)}
	for _, a := range args {
		q = append(q, shellQuote(a))
	}
	return strings.Join(q, " ") + `; echo "rc=$?"` + "\n"
}

// TestE2ETTYCommandReadsTerminal: a command that reads the terminal gets
// what the user types (issue 12, item 5).
func TestE2ETTYCommandReadsTerminal(t *testing.T) {
	bin := dlockBinary(t)
	name := "e2e-tty-read-" + randomID()
	t.Cleanup(func() { killStrays(name) })
	tm := shell(t)
	at := tm.mark()
	tm.send(runLine(bin, "run", "--backend", "file://"+t.TempDir(), name, "--", "sh", "-c", `echo ready; read x; echo "got:$x"`))
	at = tm.expect(readyLine, at, 10*time.Second)
	tm.send("hello\n")
	tm.expect(`got:hello\r?\n(.*\n)*rc=0\r?\n`, at, 10*time.Second)
}

// TestE2ETTYCtrlC: Ctrl-C stops a command that waits for terminal input.
func TestE2ETTYCtrlC(t *testing.T) {
	bin := dlockBinary(t)
	name := "e2e-tty-int-" + randomID()
	t.Cleanup(func() { killStrays(name) })
	tm := shell(t)
	at := tm.mark()
	tm.send(runLine(bin, "run", "--backend", "file://"+t.TempDir(), name, "--", "sh", "-c", `echo ready; read x; echo "got:$x"`))
	at = tm.expect(readyLine, at, 10*time.Second)
	tm.send("\x03")
	tm.expect(`rc=130\r?\n`, at, 10*time.Second)
	noStrays(t, name, "after Ctrl-C")
}

// TestE2ETTYGivesTerminalBack: a caller without job control (sh -c) can
// read the terminal after dlock, whose command had it.
// Also when the command's exec fails after it took the terminal.
func TestE2ETTYGivesTerminalBack(t *testing.T) {
	bin := dlockBinary(t)
	badInterpreter := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(badInterpreter, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		command string
		rc      int
	}{{"true", 0}, {badInterpreter, exitNotFound}} {
		tm := startTerm(t, "sh", "-c", runLine(bin, "run", "--backend", "file://"+t.TempDir(), "e2e-tty-back-"+randomID(), "--", tc.command)+
			`echo ready; read y; echo "after:$y"`)
		at := tm.expect(`rc=`+strconv.Itoa(tc.rc)+`\r?\nready`, 0, 10*time.Second)
		tm.send("z\n")
		tm.expect(`after:z`, at, 10*time.Second)
	}
}

// tickLog returns a command that appends to a log every 50ms, and the log.
// It is bash, not sh: dash starts commands with vfork, and a Ctrl-Z that
// lands between a vfork and the exec stops the child while the parent waits
// for it unstoppably (seen here under load: the sh in state D, its child
// stopped before exec), so the command's first process never stops and
// neither does dlock, which follows it.
func tickLog(t *testing.T) ([]string, string) {
	log := filepath.Join(t.TempDir(), "ticks")
	return []string{"bash", "-c", `echo ready; while :; do echo tick >> "$1"; sleep 0.05; done`, "bash", log}, log
}

// TestE2ETTYCtrlZFile: Ctrl-Z stops the command with dlock; the lock stays
// held (a file lock has no TTL); fg continues it (issue 12, item 4).
func TestE2ETTYCtrlZFile(t *testing.T) {
	bin := dlockBinary(t)
	backend := "file://" + t.TempDir()
	name := "e2e-tty-tstp-" + randomID()
	t.Cleanup(func() { killStrays(name) })
	command, log := tickLog(t)
	tm := shell(t)
	at := tm.mark()
	tm.send(runLine(bin, append([]string{"run", "--backend", backend, name, "--"}, command...)...))
	at = tm.expect(readyLine, at, 10*time.Second)
	tm.send("\x1a")
	at = tm.expect(`Stopped`, at, 10*time.Second)

	stopped := readFile(t, log)
	time.Sleep(300 * time.Millisecond) // the command would tick 6 times if it ran
	if got := readFile(t, log); got != stopped {
		t.Fatalf("the command ran on while dlock was stopped (%d ticks -> %d)", strings.Count(stopped, "\n"), strings.Count(got, "\n"))
	}
	out, err := exec.Command(bin, "run", "--backend", backend, "--no-wait", name, "--", "true").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitNotAcquired {
		t.Fatalf("another dlock while the first is stopped: %v %s; want exit %d (held)", err, out, exitNotAcquired)
	}

	tm.send("fg; echo \"rc=$?\"\n")
	deadline := time.Now().Add(10 * time.Second)
	for readFile(t, log) == stopped {
		if time.Now().After(deadline) {
			t.Fatalf("the command did not continue after fg:\n%s", tm.output(at))
		}
		time.Sleep(10 * time.Millisecond) // no event for a file growing
	}
	tm.send("\x03")
	tm.expect(`rc=130\r?\n`, at, 10*time.Second)
	noStrays(t, name, "after Ctrl-C")
}

// TestE2ETTYCtrlZRedis: Ctrl-Z on an engine with a TTL. While dlock is
// stopped the lock is not renewed and expires; the command is stopped too,
// so it never runs alongside the next holder; after fg it is terminated
// rather than continued without the lock (issue 12, item 4).
func TestE2ETTYCtrlZRedis(t *testing.T) {
	bin := dlockBinary(t)
	backend := "redis://" + testserver.Redis(t)[0]
	name := "e2e-tty-tstp-" + randomID()
	t.Cleanup(func() { killStrays(name) })
	command, log := tickLog(t)
	tm := shell(t)
	at := tm.mark()
	tm.send(runLine(bin, append([]string{"run", "--backend", backend, "--ttl", "1s", "--grace", "2s", name, "--"}, command...)...))
	at = tm.expect(readyLine, at, 10*time.Second)
	tm.send("\x1a")
	at = tm.expect(`Stopped`, at, 10*time.Second)
	stopped := readFile(t, log)

	// The TTL runs out; the next holder gets the lock while the first
	// command stands still.
	out, err := exec.Command(bin, "run", "--backend", backend, "--ttl", "1s", "--wait", "10s", name, "--", "true").CombinedOutput()
	if err != nil {
		t.Fatalf("next holder while the first dlock is stopped: %v %s", err, out)
	}
	if got := readFile(t, log); got != stopped {
		t.Fatalf("the command ran on while dlock was stopped and the lock expired (%d ticks -> %d)", strings.Count(stopped, "\n"), strings.Count(got, "\n"))
	}

	tm.send("fg; echo \"rc=$?\"\n")
	tm.expect(`dlock: lock "`+name+`" lost (.*\n)*rc=76\r?\n`, at, 10*time.Second)
	if got := readFile(t, log); got != stopped {
		t.Fatalf("the command was continued without the lock (%d ticks -> %d)", strings.Count(stopped, "\n"), strings.Count(got, "\n"))
	}
	noStrays(t, name, "after the loss")
}
