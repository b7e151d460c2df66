package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// binary builds the dlock command once per test run.
var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildDir  string
)

func dlockBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests build the binary; skipped with -short")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "dlock-e2e-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "dlock")
		out, err := exec.Command("go", "build", "-race", "-tags", "dlock_testhooks", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// removeBuild is called by TestMain's cleanup through testMainCleanup.
func removeBuild() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// counterScript is a deliberately non-atomic read-modify-write of a counter
// file; it also records the token it ran with, in the order the commands ran.
const counterScript = `n=$(cat counter); sleep 0.01; echo $((n+1)) > counter; echo "$DLOCK_TOKEN" >> tokens`

// runCounterProcs starts n dlock processes at once on backend, each
// incrementing the counter in dir, and checks the outcome.
func runCounterProcs(t *testing.T, backend, name string, n int) {
	bin := dlockBinary(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "counter"), []byte("0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			cmd := exec.CommandContext(ctx, bin, "run", "--backend", backend, name, "--", "sh", "-c", counterScript)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("process %d: %v: %s", i, err, out)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "counter"))
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(n) {
		t.Errorf("counter = %s after %d increments under the lock", got, n)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "tokens"))
	lines := strings.Fields(string(b))
	if len(lines) != n {
		t.Fatalf("%d tokens recorded, want %d: %q", len(lines), n, lines)
	}
	var prev uint64
	for i, l := range lines {
		tok, err := strconv.ParseUint(l, 10, 64)
		if err != nil {
			t.Fatalf("token %d: %q: %v", i, l, err)
		}
		if i > 0 && tok <= prev {
			t.Fatalf("tokens not strictly increasing in the order the commands ran: %d after %d (all: %v)", tok, prev, lines)
		}
		prev = tok
	}
}

func TestE2EFileCounter(t *testing.T) {
	runCounterProcs(t, "file://"+t.TempDir(), "e2e-counter", 30)
}

// TestE2EInterruptWhileWaiting sends a real SIGINT to a waiting dlock.
func TestE2EInterruptWhileWaiting(t *testing.T) {
	bin := dlockBinary(t)
	backend := "file://" + t.TempDir()
	holder, ready := startHolder(t, bin, backend, "e2e-busy")
	defer stopHolder(holder)
	<-ready

	waiter := exec.Command(bin, "run", "--backend", backend, "e2e-busy", "--", "echo", "ran")
	var out strings.Builder
	waiter.Stdout, waiter.Stderr = &out, &out
	if err := waiter.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGINT before dlock has set up its handlers would kill it outright:
	// wait until the engine counts it as a waiter.
	awaitFileWaiters(t, backend, "e2e-busy", 1)
	sent := time.Now()
	waiter.Process.Signal(syscall.SIGINT)
	err := waiter.Wait()
	if d := time.Since(sent); d > 2*time.Second {
		t.Fatalf("exited %v after SIGINT", d)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("want exit 130, got %v: %s", err, out.String())
	}
	if strings.Contains(out.String(), "ran") {
		t.Fatalf("the command ran: %s", out.String())
	}
}

// startHolder runs `dlock run NAME -- sh` holding the lock until its stdin
// closes; ready is closed once the lock is held.
func startHolder(t *testing.T, bin, backend, name string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(bin, "run", "--backend", backend, name, "--", "sh", "-c", "echo held; read x")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "held" {
				close(ready)
			}
		}
	}()
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	return cmd, ready
}

func stopHolder(cmd *exec.Cmd) { cmd.Process.Signal(syscall.SIGTERM) }

// lossHolder is a `dlock run` whose command prints "started VALUE", then
// sleeps, then "survived" unless it is stopped by a loss.
type lossHolder struct {
	cmd    *exec.Cmd
	sc     *bufio.Scanner
	stderr syncBuffer // written by exec's copying goroutine
}

// startLossHolder starts `dlock run ARGS -- sh -c 'echo started VALUE; …'`
// and returns once the command has started, with what it printed as VALUE.
func startLossHolder(t *testing.T, bin, value string, args ...string) (*lossHolder, string) {
	t.Helper()
	h := &lossHolder{}
	args = append(append([]string{"run"}, args...), "--", "sh", "-c", "echo started "+value+"; sleep 30; echo survived")
	h.cmd = exec.Command(bin, args...)
	stdout, _ := h.cmd.StdoutPipe()
	h.cmd.Stderr = &h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.cmd.Process.Kill() })
	h.sc = bufio.NewScanner(stdout)
	if !h.sc.Scan() || !strings.HasPrefix(h.sc.Text(), "started ") {
		t.Fatalf("command did not start: %q %v; stderr %s", h.sc.Text(), h.sc.Err(), h.stderr.String())
	}
	return h, strings.TrimPrefix(h.sc.Text(), "started ")
}

// expectStoppedByLoss checks that dlock exits with exitLost within the
// given time of the loss at lost, without the command running on.
func (h *lossHolder) expectStoppedByLoss(t *testing.T, lost time.Time, within time.Duration) time.Duration {
	t.Helper()
	var rest strings.Builder
	for h.sc.Scan() {
		rest.WriteString(h.sc.Text())
	}
	err := h.cmd.Wait()
	took := time.Since(lost)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitLost {
		t.Fatalf("want exit %d, got %v; stderr: %s", exitLost, err, h.stderr.String())
	}
	if took > within {
		t.Fatalf("the command was stopped %v after the loss, want within %v", took, within)
	}
	if strings.Contains(rest.String(), "survived") {
		t.Fatal("the command ran on after the loss")
	}
	return took
}

// TestE2ELossOnFile forces a loss through the engine: removing a held lock
// file is what filelock reports as lost (at the next renewal, TTL/3).
func TestE2ELossOnFile(t *testing.T) {
	bin := dlockBinary(t)
	dir := t.TempDir()
	h, pid := startLossHolder(t, bin, "$$", "--backend", "file://"+dir, "--ttl", "1s", "--grace", "5s", "e2e-loss")
	childPid, _ := strconv.Atoi(pid)

	files, _ := filepath.Glob(filepath.Join(dir, "*.lock"))
	if len(files) == 0 {
		t.Fatal("no lock file")
	}
	lost := time.Now()
	for _, f := range files {
		os.Remove(f)
	}
	// Noticed at the next renewal (every TTL/3 = 333ms), then SIGTERM obeyed.
	took := h.expectStoppedByLoss(t, lost, 2*time.Second)
	if err := syscall.Kill(childPid, 0); err == nil {
		t.Fatalf("the command (pid %d) is still alive", childPid)
	}
	t.Logf("lost lock noticed and command stopped in %v", took)
}

// awaitFileWaiters waits until the file engine counts n waiters on name.
func awaitFileWaiters(t *testing.T, backend, name string, n int) {
	t.Helper()
	c, err := dlock.Open(t.Context(), backend)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Status(t.Context(), name)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if st.Waiters >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters on %q after 30s, want %d", st.Waiters, name, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
