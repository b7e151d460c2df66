package filelock

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
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

const semLimit = 3

// semChild takes a permit of "sem" (semLimit permits) N times; while it
// holds one, it has a file of its own in DIR/in and counts the files there:
// more than semLimit is more holders than permits. It logs its tokens.
func semChild(c *dlock.Client, dir string) int {
	n, _ := strconv.Atoi(os.Getenv("N"))
	in := filepath.Join(dir, "in")
	sem := c.Semaphore("sem", semLimit)
	ctx := context.Background()
	most := 0
	for i := range n {
		l, err := sem.Acquire(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		mine := filepath.Join(in, fmt.Sprintf("%d-%d", os.Getpid(), i))
		err = os.WriteFile(mine, nil, 0o600)
		var entries []os.DirEntry
		if err == nil {
			entries, err = os.ReadDir(in)
		}
		if err == nil {
			most = max(most, len(entries))
			time.Sleep(time.Millisecond)
			err = os.Remove(mine)
		}
		if err == nil {
			err = appendLine(filepath.Join(dir, fmt.Sprintf("tokens-%d", os.Getpid())), l.Token())
		}
		if uerr := l.Unlock(ctx); err == nil {
			err = uerr
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if len(entries) > semLimit {
			fmt.Fprintf(os.Stderr, "%d holders of %d permits\n", len(entries), semLimit)
			return 2
		}
	}
	fmt.Println(most)
	return 0
}

// TestSemaphoreProcesses: processes take permits over and over; never more
// holders than permits, every token granted once, and each process's
// tokens increase.
func TestSemaphoreProcesses(t *testing.T) {
	const procs, each = 6, 30
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		most int
	)
	for range procs {
		wg.Go(func() {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), rwChildEnv+"=sem", "DIR="+dir, "N="+strconv.Itoa(each))
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("child: %v", err)
				return
			}
			m, _ := strconv.Atoi(strings.TrimSpace(string(out)))
			mu.Lock()
			most = max(most, m)
			mu.Unlock()
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	files, _ := filepath.Glob(filepath.Join(dir, "tokens-*"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var last uint64
		for _, line := range strings.Fields(string(b)) {
			tok, _ := strconv.ParseUint(line, 10, 64)
			if tok <= last || seen[tok] {
				t.Fatalf("token %d in %s: after %d, or granted twice", tok, file, last)
			}
			seen[tok], last = true, tok
		}
	}
	if len(seen) != procs*each {
		t.Errorf("%d tokens for %d grants", len(seen), procs*each)
	}
	t.Logf("%d processes × %d permits of %d: at most %d held at once", procs, each, semLimit, most)
}

// holdInChild starts a process that holds a permit of name (n permits)
// until killed.
func holdInChild(t *testing.T, dir, name string, n int) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), rwChildEnv+"=semhold", "DIR="+dir, "NAME="+name, "N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "holding\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	return cmd
}

// TestSemaphoreLimitAcrossProcesses: a process holding a permit of 2
// makes a request for one of 3 fail, naming both; killed, it gives its
// permit back at once, and then the semaphore may be taken with another
// limit (nobody holds or waits: the kernel dropped the child's claim on
// the limit with its files).
func TestSemaphoreLimitAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := holdInChild(t, dir, "s", 2)
	l, err := c.Semaphore("s", 3).TryAcquire(t.Context())
	if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), "= 3") || !strings.Contains(err.Error(), "want 2") {
		if l != nil {
			l.Unlock(t.Context())
		}
		t.Fatalf("Semaphore(s, 3) while another process holds one of 2 = %v; want ErrInvalidArgument naming 3 and 2", err)
	}
	t.Log(err)
	one, err := c.Semaphore("s", 2).TryAcquire(t.Context())
	if err != nil {
		t.Fatalf("the second of 2 permits: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := c.Semaphore("s", 2).Acquire(t.Context())
		if err == nil {
			err = l.Unlock(context.Background())
		}
		got <- err
	}()
	parked(t, 1)
	start := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("permit back %v after its holder was killed", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("permit of a killed holder not back within 10 s")
	}
	if err := one.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	three, err := c.Semaphore("s", 3).TryAcquire(t.Context())
	if err != nil {
		t.Fatalf("Semaphore(s, 3) once nobody holds or waits: %v", err)
	}
	three.Unlock(t.Context())
}

// TestSemaphoreCancelledWaitLeavesNoClaim: a waiter that gives up keeps no
// claim on the limit: once the holder leaves, another limit may be used.
func TestSemaphoreCancelledWaitLeavesNoClaim(t *testing.T) {
	c, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held, err := c.Semaphore("s", 1).Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan error, 1)
	go func() {
		_, err := c.Semaphore("s", 1).Acquire(ctx)
		got <- err
	}()
	parked(t, 1)
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire = %v", err)
	}
	if err := held.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	l, err := c.Semaphore("s", 4).TryAcquire(t.Context())
	if err != nil {
		t.Fatalf("Semaphore(s, 4) after every holder and waiter of (s, 1) left: %v", err)
	}
	l.Unlock(t.Context())
}

// TestSemaphoreAndLockRefuseEachOther: a name in use as a lock (held,
// read, or awaited by a writer) cannot be taken as a semaphore, and the
// other way round; tokens of the name stay one sequence across the three.
func TestSemaphoreAndLockRefuseEachOther(t *testing.T) {
	dir := t.TempDir()
	var cs []*dlock.Client
	for range 3 {
		c, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	a, b, w := cs[0], cs[1], cs[2]
	refused := func(what string, l *dlock.Lease, err error) {
		t.Helper()
		if l != nil {
			l.Unlock(t.Context())
		}
		if !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("%s = %v, want ErrInvalidArgument", what, err)
		}
	}
	var tokens []uint64
	take := func(what string, acquire func(context.Context) (*dlock.Lease, error)) *dlock.Lease {
		t.Helper()
		l, err := acquire(t.Context())
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		tokens = append(tokens, l.Token())
		return l
	}

	lm := take("Mutex.Lock", a.Mutex("x").Lock)
	l, err := b.Semaphore("x", 2).TryAcquire(t.Context())
	refused("Semaphore.TryAcquire while a Mutex holds", l, err)
	l, err = b.Semaphore("x", 2).Acquire(t.Context())
	refused("Semaphore.Acquire while a Mutex holds", l, err)
	lm.Unlock(t.Context())

	lr := take("RLock", a.RWMutex("x").RLock)
	l, err = b.Semaphore("x", 2).TryAcquire(t.Context())
	refused("Semaphore.TryAcquire while a reader holds", l, err)
	wch := make(chan error, 1)
	go func() {
		l, err := w.RWMutex("x").Lock(t.Context())
		if err == nil {
			tokens = append(tokens, l.Token()) // read after <-wch
			err = l.Unlock(context.Background())
		}
		wch <- err
	}()
	markedTurnstile(t, dir, "x")
	lr.Unlock(t.Context())
	if err := <-wch; err != nil {
		t.Fatal(err)
	}

	ls := take("Semaphore.Acquire", a.Semaphore("x", 2).Acquire)
	l, err = b.Mutex("x").TryLock(t.Context())
	refused("Mutex.TryLock while a permit is held", l, err)
	l, err = b.RWMutex("x").RLock(t.Context())
	refused("RLock while a permit is held", l, err)
	if err != nil && !strings.Contains(err.Error(), "semaphore of 2 permits") {
		t.Errorf("refusal does not name the limit: %v", err)
	}
	ls2 := take("the second permit", b.Semaphore("x", 2).Acquire)
	ls.Unlock(t.Context())
	ls2.Unlock(t.Context())
	lw := take("Lock after the semaphore's holders left", b.RWMutex("x").Lock)
	lw.Unlock(t.Context())
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("tokens %v: want increasing in grant order", tokens)
		}
	}
}

// TestPermitFileSymlinkNotFollowed: a symbolic link where a permit file goes
// is an error, as for a lock file.
func TestPermitFileSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	target := filepath.Join(t.TempDir(), "elsewhere")
	for _, name := range []string{semName(fileName("s")), permitName(fileName("s"), 1)} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		l, err := c.Semaphore("s", 1).TryAcquire(t.Context())
		if err == nil {
			l.Unlock(t.Context())
			t.Fatalf("TryAcquire through a symlink at %s succeeded", name)
		}
		if !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("TryAcquire with a symlink at %s: %v, want an error naming the symlink", name, err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the symlink's target was made: %v", err)
		}
		os.Remove(filepath.Join(dir, name))
	}
}

// TestSemaphoreLimitBounds: a limit above maxPermits is refused before
// any file is made, naming the bound.
func TestSemaphoreLimitBounds(t *testing.T) {
	dir := t.TempDir()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Semaphore("s", maxPermits+1).TryAcquire(t.Context())
	if !errors.Is(err, dlock.ErrInvalidArgument) || !strings.Contains(err.Error(), strconv.Itoa(maxPermits)) {
		t.Fatalf("Semaphore(s, %d) = %v, want ErrInvalidArgument naming %d", maxPermits+1, err, maxPermits)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "s.*")); len(files) != 0 {
		t.Errorf("files made for a refused limit: %v", files)
	}
	l, err := c.Semaphore("s", maxPermits).TryAcquire(t.Context())
	if err != nil {
		t.Fatalf("Semaphore(s, %d): %v", maxPermits, err)
	}
	l.Unlock(t.Context())
}
