package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// electProc is a built `dlock elect` whose command prints its
// DLOCK_TOKEN, then runs until its stdin is closed.
type electProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	term  chan uint64 // the command's DLOCK_TOKEN, once it runs
}

func startElect(t *testing.T, backend, value string, flags ...string) *electProc {
	t.Helper()
	p := &electProc{term: make(chan uint64, 1)}
	args := append(append([]string{"elect", "--backend", backend, "--value", value}, flags...), "svc", "--",
		"sh", "-c", `echo "$DLOCK_TOKEN"; cat >/dev/null`)
	p.cmd = exec.Command(dlockBinary(t), args...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if tok, perr := strconv.ParseUint(strings.TrimSpace(line), 10, 64); err == nil && perr == nil {
			p.term <- tok
		}
		close(p.term)
		io.Copy(io.Discard, out)
	}()
	return p
}

func (p *electProc) leads(t *testing.T, within time.Duration) uint64 {
	t.Helper()
	select {
	case tok, ok := <-p.term:
		if !ok {
			t.Fatal("elect's command ended without printing its token")
		}
		return tok
	case <-time.After(within):
		t.Fatalf("elect's command not running within %v", within)
	}
	return 0
}

// watchLines follows `dlock leader --watch --json svc`: every line it
// prints, in order.
type watchLines struct {
	cmd   *exec.Cmd
	lines chan leaderJSON
	last  uint64 // the largest term seen
}

func (w *watchLines) next(t *testing.T, want string, term uint64) time.Time {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				t.Fatalf("leader --watch ended while waiting for %q (term %d)", want, term)
			}
			if l.Term != nil {
				if *l.Term < w.last {
					t.Errorf("leader --watch printed term %d after term %d", *l.Term, w.last)
				}
				w.last = *l.Term
			}
			switch {
			case want == "" && l.Leader == nil:
				return time.Now()
			case l.Leader != nil && *l.Leader == want && *l.Term == term:
				return time.Now()
			}
		case <-timeout:
			t.Fatalf("leader --watch did not print %q (term %d) within 10s", want, term)
		}
	}
}

// TestE2EElectOnFile: dlock elect processes on file:// take turns leading
// svc, and dlock leader --watch, in a process of its own, prints each
// change: nobody, the first leader, nobody as soon as that leader's dlock
// is killed, the next leader with a larger term, nobody when its command
// ends. dlock leader shows the leader of the moment.
func TestE2EElectOnFile(t *testing.T) {
	e2eElect(t, "file://"+t.TempDir(), nil, true)
}

// e2eElect runs the election scenario on backend, with flags for dlock
// elect. nobodyBetween says whether the engine shows nobody between a
// killed leader and the next (file: the lock is free at once; a TTL
// engine hands it straight to the waiting candidate when the TTL ends).
func e2eElect(t *testing.T, backend string, flags []string, nobodyBetween bool) {
	bin := dlockBinary(t)
	w := &watchLines{lines: make(chan leaderJSON, 100)}
	w.cmd = exec.Command(bin, "leader", "--backend", backend, "--watch", "--json", "svc")
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.cmd.Stderr = os.Stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cmd.Process.Kill(); w.cmd.Wait() })
	go func() {
		defer close(w.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l leaderJSON
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("leader --watch printed %q: %v", sc.Text(), err)
				continue
			}
			w.lines <- l
		}
	}()
	w.next(t, "", 0)

	a := startElect(t, backend, "node-a", flags...)
	termA := a.leads(t, 10*time.Second)
	w.next(t, "node-a", termA)
	b := startElect(t, backend, "node-b", flags...)
	oneShot := func(want string) {
		t.Helper()
		out, err := exec.Command(bin, "leader", "--backend", backend, "svc").Output()
		if err != nil || string(out) != want {
			t.Errorf("dlock leader printed %q (%v), want %q", out, err, want)
		}
	}
	oneShot("leader: node-a (term " + strconv.FormatUint(termA, 10) + ")\n")
	select {
	case tok := <-b.term:
		t.Fatalf("a second candidate's command ran (term %d) while the first led", tok)
	default:
	}

	killed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if nobodyBetween {
		gone := w.next(t, "", 0)
		t.Logf("leader --watch printed no leader %v after the leader's dlock was killed", gone.Sub(killed))
	}
	termB := b.leads(t, 15*time.Second)
	t.Logf("the second candidate's command ran %v after the kill", time.Since(killed))
	if termB <= termA {
		t.Errorf("second leader's term %d after the first's %d", termB, termA)
	}
	w.next(t, "node-b", termB)
	oneShot("leader: node-b (term " + strconv.FormatUint(termB, 10) + ")\n")

	b.stdin.Close() // its command ends: leadership is given up
	if err := b.cmd.Wait(); err != nil {
		t.Errorf("second elect: %v", err)
	}
	w.next(t, "", 0)
	oneShot("no leader\n")

	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("leader --watch still running 5s after SIGINT")
	}
}
