package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runProcs starts one built dlock per argument list at once, in dir, and
// waits for all of them.
func runProcs(t *testing.T, dir string, argss [][]string) {
	t.Helper()
	bin := dlockBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, len(argss))
	for i, args := range argss {
		go func() {
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("process %d (%q): %v: %s", i, args, err, out)
			}
			errs <- err
		}()
	}
	for range argss {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// logLines reads the log the commands appended to, one line per command.
func logLines(t *testing.T, dir string, want int) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != want {
		t.Fatalf("%d commands logged, want %d: %q", len(lines), want, lines)
	}
	return lines
}

// TestE2ESharedOnFile: readers (dlock run --shared) and writers (dlock
// run) of one name, as separate processes: a writer runs alone, a reader
// never beside a writer. Each command marks itself in a directory while it
// runs and logs what it saw there.
func TestE2ESharedOnFile(t *testing.T) {
	e2eShared(t, "file://"+t.TempDir(), "catalog")
}

func e2eShared(t *testing.T, backend, name string) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "in"), 0o700)
	const writer = `touch in/w.$$; echo "w $(ls in | wc -l)" >> log; sleep 0.02; rm in/w.$$`
	const reader = `touch in/r.$$; echo "r $(ls in | grep -c '^w')" >> log; sleep 0.02; rm in/r.$$`
	var argss [][]string
	for i := range 12 {
		if i%3 == 0 {
			argss = append(argss, []string{"run", "--backend", backend, name, "--", "sh", "-c", writer})
		} else {
			argss = append(argss, []string{"run", "--backend", backend, "--shared", name, "--", "sh", "-c", reader})
		}
	}
	runProcs(t, dir, argss)
	for _, l := range logLines(t, dir, len(argss)) {
		// A writer saw only itself; a reader saw no writer.
		if f := strings.Fields(l); (f[0] == "w" && f[1] != "1") || (f[0] == "r" && f[1] != "0") {
			t.Errorf("exclusion broken: %q (w N: N commands ran beside a writer, itself included; r N: N writers beside a reader)", l)
		}
	}
}

// TestE2ELimitOnFile: twelve dlock run --limit 3 processes; never more
// than three commands at once.
func TestE2ELimitOnFile(t *testing.T) {
	e2eLimit(t, "file://"+t.TempDir(), "api")
}

func e2eLimit(t *testing.T, backend, name string) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "in"), 0o700)
	const script = `touch in/$$; echo "$(ls in | wc -l)" >> log; sleep 0.03; rm in/$$`
	var argss [][]string
	for range 12 {
		argss = append(argss, []string{"run", "--backend", backend, "--limit", "3", name, "--", "sh", "-c", script})
	}
	runProcs(t, dir, argss)
	most := "0"
	for _, l := range logLines(t, dir, len(argss)) {
		if n := strings.TrimSpace(l); n > "3" || len(n) > 1 {
			t.Errorf("a command ran beside %s commands (itself included), want at most 3", n)
		} else if n > most {
			most = n
		}
	}
	t.Logf("at most %s commands at once", most)
}
