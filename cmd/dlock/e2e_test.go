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
		out, err := exec.Command("go", "build", "-race", "-o", buildPath, ".").CombinedOutput()
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
	// There is no event for "the waiter is waiting": give it a moment; the
	// test holds whichever way the race goes (SIGINT before or during the wait).
	time.Sleep(300 * time.Millisecond)
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

// TestE2ELossOnFile forces a loss through the engine: removing a held lock
// file is what filelock reports as lost (at the next renewal, TTL/3).
func TestE2ELossOnFile(t *testing.T) {
	bin := dlockBinary(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "run", "--backend", "file://"+dir, "--ttl", "900ms", "--grace", "5s", "e2e-loss", "--",
		"sh", "-c", `echo started $$; sleep 30; echo survived`)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "started ") {
		t.Fatalf("command did not start: %q %v", sc.Text(), sc.Err())
	}
	childPid, _ := strconv.Atoi(strings.TrimPrefix(sc.Text(), "started "))

	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) == 0 {
		t.Fatal("no lock file")
	}
	lost := time.Now()
	for _, f := range files {
		os.Remove(f)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text())
	}
	err := cmd.Wait()
	took := time.Since(lost)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitLost {
		t.Fatalf("want exit %d, got %v; stderr: %s", exitLost, err, stderr.String())
	}
	// Noticed at the next renewal (every TTL/3 = 300ms), then SIGTERM obeyed.
	if took > 2*time.Second {
		t.Fatalf("the command was stopped %v after the loss", took)
	}
	if strings.Contains(rest.String(), "survived") {
		t.Fatal("the command ran on after the loss")
	}
	if err := syscall.Kill(childPid, 0); err == nil {
		t.Fatalf("the command (pid %d) is still alive", childPid)
	}
	t.Logf("lost lock noticed and command stopped in %v", took)
}
