package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nonReapingParentEnv, set to a JSON command line, makes the test binary a
// stand-in for a container entry point that never reaps: it becomes a
// child subreaper, so that orphans below it become its children, runs the
// command line and waits for that process only. TestMain calls
// runNonReapingParent first.
const nonReapingParentEnv = "DLOCK_TEST_NONREAPING_PARENT"

func runNonReapingParent() {
	v := os.Getenv(nonReapingParentEnv)
	if v == "" {
		return
	}
	var argv []string
	if err := json.Unmarshal([]byte(v), &argv); err != nil || len(argv) == 0 {
		fmt.Fprintf(os.Stderr, "%s: want a JSON array of arguments: %v\n", nonReapingParentEnv, err)
		os.Exit(125)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		os.Exit(125)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run() // waits for its own child only, never for adopted ones
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(cmd.ProcessState.ExitCode())
}

// TestE2EOrphanZombieEndsGroup: a process of the command's group that
// outlives the command's first process, and so is orphaned, is reaped by
// dlock when it exits; dlock then exits. It does not wait for PID 1 or a
// subreaper above it to reap the zombie, which keeps the group alive for
// the kernel. Under a parent that adopts orphans and never reaps them (a
// container entry point that does not wait) dlock used to hang, holding
// the lock; under this sandbox's PID 1 it took ~2 s longer than the group.
func TestE2EOrphanZombieEndsGroup(t *testing.T) {
	bin := dlockBinary(t)
	argv, _ := json.Marshal([]string{bin, "run", "--backend", "file://" + t.TempDir(), "orphan", "--",
		"sh", "-c", `(sleep 0.3; echo orphan-done) & echo started`})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nonReapingParentEnv+"="+string(argv))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the parent and dlock: killed together below
	out, errw := newLineWriter("started"), newLineWriter("\x00")
	cmd.Stdout, cmd.Stderr = out, errw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var err error
	exited := make(chan struct{})
	go func() { err = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	var started time.Time
	select {
	case <-out.seen:
		started = time.Now()
	case <-exited:
		t.Fatalf("dlock run ended before its command started: %v; stderr %s", err, errw)
	case <-time.After(10 * time.Second):
		t.Fatalf("the command did not start within 10s; stderr %s", errw)
	}
	select {
	case <-exited:
		took := time.Since(started)
		if err != nil {
			t.Fatalf("dlock run: %v; stderr: %s", err, errw)
		}
		if !strings.Contains(out.String(), "orphan-done") || took < 300*time.Millisecond {
			t.Fatalf("dlock exited %v after its command started, output %q: before the orphan of its command's group had finished", took, out)
		}
		// The bound is loose (a loaded machine); the failure it is there
		// for is a wait without end.
		if took > 5*time.Second {
			t.Fatalf("dlock exited %v after its command started; its group ended after 0.3 s", took)
		}
		t.Logf("dlock exited %v after its command started (the orphan sleeps 0.3 s)", took)
	case <-time.After(10 * time.Second):
		t.Fatalf("dlock run has not exited 10 s after it started, although its command's group (an orphan sleeping 0.3 s) ended: waiting for a zombie nobody reaps? output %q, stderr %s",
			out, errw)
	}
}
