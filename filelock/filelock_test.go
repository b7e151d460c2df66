package filelock

import (
	"context"
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

	"go.uber.org/goleak"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(child())
	}
	if os.Getenv(limitChildEnv) != "" {
		os.Exit(limitChild())
	}
	if os.Getenv(electChildEnv) != "" {
		os.Exit(electChild())
	}
	if mode := os.Getenv(rwChildEnv); mode != "" {
		os.Exit(rwChild(mode))
	}
	goleak.VerifyTestMain(m)
}

type harness struct{ dir string }

func (h harness) MakeDriver(context.Context) (driver.Driver, error) { return open(h.dir) }
func (h harness) Close()                                            {}

// ForceLoss replaces the lock file with a copy, as an operator breaking a
// stale lock would: the holder's flock stays on the old file.
func (h harness) ForceLoss(_ context.Context, name string) error {
	path := filepath.Join(h.dir, fileName(name))
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (h harness) Crash(_ context.Context, d driver.Driver) (bool, error) {
	d.(*fileDriver).crash()
	return true, nil // the kernel frees a closed file's lock at once
}

func TestConformance(t *testing.T) {
	drivertest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (drivertest.Harness, error) {
		return harness{t.TempDir()}, nil
	})
}

const childEnv = "DLOCK_FILELOCK_CHILD"

// child increments a counter file under the lock, non-atomically, and
// records the tokens it saw.
func child() int {
	dir, n := os.Getenv("DIR"), os.Getenv("N")
	count, _ := strconv.Atoi(n)
	c, err := New(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	counter := filepath.Join(dir, "counter")
	ctx := context.Background()
	for range count {
		err := dlock.Do(ctx, c, "counter", func(ctx context.Context, l *dlock.Lease) error {
			b, err := os.ReadFile(counter)
			if err != nil && !os.IsNotExist(err) {
				return err
			}
			v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if err := os.WriteFile(counter, []byte(strconv.Itoa(v+1)), 0o600); err != nil {
				return err
			}
			f, err := os.OpenFile(filepath.Join(dir, "tokens"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = fmt.Fprintln(f, l.Token())
			return err
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// TestProcesses: separate OS processes increment a counter file under the
// lock; the result is exact and tokens increase in the order they ran.
func TestProcesses(t *testing.T) {
	const procs, each = 8, 25
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, procs)
	for range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=1", "DIR="+dir, "N="+strconv.Itoa(each))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("child: %v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "counter"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(procs*each) {
		t.Errorf("counter = %s, want %d", got, procs*each)
	}
	b, err = os.ReadFile(filepath.Join(dir, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i, line := range strings.Fields(string(b)) {
		tok, _ := strconv.ParseUint(line, 10, 64)
		if tok <= last {
			t.Fatalf("token #%d = %d after %d: want strictly increasing", i, tok, last)
		}
		last = tok
	}
}

// TestDeadProcessFreesLock: a holder killed with SIGKILL frees the lock at
// once (the kernel closes its files); the waiter needs no TTL.
func TestDeadProcessFreesLock(t *testing.T) {
	dir := t.TempDir()
	// flock(1) from util-linux locks a read-only file and holds it itself (-o).
	if _, err := exec.LookPath("flock"); err != nil {
		t.Fatal("flock(1) (util-linux) not installed")
	}
	cmd := exec.Command("flock", "-o", filepath.Join(dir, fileName("x")), "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }) // and the sleep
	c, err := New(dir, dlock.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the child holds it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(context.Background(), "x")
		if err != nil {
			t.Fatal(err)
		}
		if st.Held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) child never took the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := make(chan time.Time, 1)
	go func() {
		l, err := c.Mutex("x").Lock(context.Background())
		if err == nil {
			got <- time.Now()
			l.Unlock(context.Background())
		}
		close(got)
	}()
	start := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case at, ok := <-got:
		if !ok {
			t.Fatal("Lock failed")
		}
		if d := at.Sub(start); d > time.Second {
			t.Errorf("lock taken %v after the holder died, want at once", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock after the holder died")
	}
}
