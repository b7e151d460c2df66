package filelock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
)

const rwChildEnv = "DLOCK_FILELOCK_RW_CHILD"

// rwChild is a process of the read-write tests. Mode "mix": N rounds of a
// reader (who checks that the counter file does not change while it
// reads) or, one round in three, a writer (who increments it without
// atomicity and logs its token); it prints how many writes it made. Mode
// "writer": waits for the writer's lock on NAME, then holds it until
// killed. Mode "hold": the same with a Mutex, printing "holding" once it
// holds; "semhold" a permit of a semaphore of N.
func rwChild(mode string) int {
	dir := os.Getenv("DIR")
	c, err := New(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	ctx := context.Background()
	switch mode {
	case "sem":
		return semChild(c, dir)
	case "hold": // the lock NAME, held until killed
		if _, err := c.Mutex(os.Getenv("NAME")).Lock(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("holding")
		select {}
	case "semhold":
		n, _ := strconv.Atoi(os.Getenv("N"))
		if _, err := c.Semaphore(os.Getenv("NAME"), n).Acquire(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("holding")
		select {}
	}
	if mode == "writer" {
		if _, err := c.RWMutex(os.Getenv("NAME")).Lock(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		select {}
	}
	rw := c.RWMutex("rw")
	counter := filepath.Join(dir, "counter")
	read := func() (int, error) {
		b, err := os.ReadFile(counter)
		if err != nil && !os.IsNotExist(err) {
			return 0, err
		}
		v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return v, nil
	}
	n, _ := strconv.Atoi(os.Getenv("N"))
	writes := 0
	for range n {
		if rand.IntN(3) == 0 {
			l, err := rw.Lock(ctx)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			v, err := read()
			if err == nil {
				time.Sleep(time.Millisecond)
				err = os.WriteFile(counter, []byte(strconv.Itoa(v+1)), 0o600)
			}
			if err == nil {
				err = appendLine(filepath.Join(dir, "tokens"), l.Token())
			}
			if uerr := l.Unlock(ctx); err == nil {
				err = uerr
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			writes++
			continue
		}
		l, err := rw.RLock(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		a, err := read()
		time.Sleep(2 * time.Millisecond)
		b, err2 := read()
		l.Unlock(ctx)
		if err = errors.Join(err, err2); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if a != b {
			fmt.Fprintf(os.Stderr, "counter changed from %d to %d under a read lease (token %d)\n", a, b, l.Token())
			return 2
		}
	}
	fmt.Println(writes)
	return 0
}

func appendLine(path string, tok uint64) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, tok)
	return errors.Join(err, f.Close())
}

// TestRWProcesses: processes take a read-write lock in both modes; no
// reader sees the counter change, no write is lost, and writers' tokens
// increase in the order they wrote.
func TestRWProcesses(t *testing.T) {
	const procs, each = 6, 40
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg     sync.WaitGroup
		writes atomic.Int64
	)
	for range procs {
		wg.Go(func() {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), rwChildEnv+"=mix", "DIR="+dir, "N="+strconv.Itoa(each))
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("child: %v", err)
				return
			}
			n, err := strconv.Atoi(strings.TrimSpace(string(out)))
			if err != nil {
				t.Errorf("child printed %q", out)
			}
			writes.Add(int64(n))
		})
	}
	wg.Wait()
	b, _ := os.ReadFile(filepath.Join(dir, "counter"))
	if got := strings.TrimSpace(string(b)); got != strconv.FormatInt(writes.Load(), 10) {
		t.Errorf("counter = %q after %d writes", got, writes.Load())
	}
	b, _ = os.ReadFile(filepath.Join(dir, "tokens"))
	var last uint64
	for i, line := range strings.Fields(string(b)) {
		tok, _ := strconv.ParseUint(line, 10, 64)
		if tok <= last {
			t.Fatalf("writer token #%d = %d after %d: want strictly increasing", i, tok, last)
		}
		last = tok
	}
	t.Logf("%d processes × %d rounds: %d writes", procs, each, writes.Load())
}

// TestWriterNotStarvedByReaderStream: readers of two clients hold the lock
// in overlapping turns, so that some reader holds at every moment (flock
// alone would never let a writer in); a writer still gets in, once the
// readers holding when it came have left.
func TestWriterNotStarvedByReaderStream(t *testing.T) {
	dir := t.TempDir()
	var clients []*dlock.Client
	for range 3 {
		c, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	const hold = 20 * time.Millisecond
	ctx, stop := context.WithCancel(t.Context())
	var (
		mu               sync.Mutex
		readers, writers int
		grants           atomic.Int64
		wg               sync.WaitGroup
	)
	for i := range 4 {
		rw := clients[i%2].RWMutex("stream")
		wg.Go(func() {
			time.Sleep(time.Duration(i) * hold / 4) // staggered: the holds overlap
			for ctx.Err() == nil {
				l, err := rw.RLock(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("RLock: %v", err)
					}
					return
				}
				mu.Lock()
				if readers++; writers > 0 {
					t.Errorf("a reader holds with the writer")
				}
				mu.Unlock()
				grants.Add(1)
				time.Sleep(hold)
				mu.Lock()
				readers--
				mu.Unlock()
				l.Unlock(context.Background())
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	const rounds = 20
	var waits []time.Duration
	for range rounds {
		// The readers stream again before each round.
		for before := grants.Load(); grants.Load() < before+8; {
			time.Sleep(hold / 4)
		}
		start := time.Now()
		wctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		lw, err := clients[2].RWMutex("stream").Lock(wctx)
		cancel()
		if err != nil {
			t.Fatalf("writer behind a stream of readers: %v after %v", err, time.Since(start))
		}
		waits = append(waits, time.Since(start))
		mu.Lock()
		if writers++; readers > 0 {
			t.Errorf("the writer got in while %d readers hold", readers)
		}
		mu.Unlock()
		time.Sleep(hold)
		mu.Lock()
		writers--
		mu.Unlock()
		if err := lw.Unlock(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(waits)
	// The readers holding when the writer came leave within one hold.
	if most := waits[rounds-1]; most > 5*hold+200*time.Millisecond {
		t.Errorf("writer waited up to %v behind readers who hold %v each", most, hold)
	}
	t.Logf("writer's wait behind readers who hold %v each, %d rounds: p50 %v, p95 %v, max %v; %d reader grants",
		hold, rounds, waits[rounds/2], waits[rounds*95/100], waits[rounds-1], grants.Load())
}

// markedTurnstile waits until a writer has marked the turnstile of name.
func markedTurnstile(t *testing.T, dir, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := os.Open(filepath.Join(dir, turnName(fileName(name))))
		if err == nil {
			held, err := ofdHeld(f, unix.F_WRLCK, writerByte, 1)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if held {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no writer marked the turnstile within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWaitingWriterInAnotherProcess: a writer waiting in another process
// keeps new readers out; killed while it waits, it lets them in at once
// (the kernel drops its mark with its files).
func TestWaitingWriterInAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	a, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r1, err := a.RWMutex("x").RLock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), rwChildEnv+"=writer", "DIR="+dir, "NAME=x")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	markedTurnstile(t, dir, "x")
	if l, err := b.RWMutex("x").TryRLock(t.Context()); !errors.Is(err, dlock.ErrNotAcquired) {
		if l != nil {
			l.Unlock(t.Context())
		}
		t.Fatalf("TryRLock behind a writer waiting in another process = %v, want ErrNotAcquired", err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := b.RWMutex("x").RLock(t.Context())
		if err == nil {
			err = l.Unlock(context.Background())
		}
		got <- err
	}()
	parked(t, 1)
	select {
	case err := <-got:
		t.Fatalf("RLock behind a waiting writer returned %v", err)
	default:
	}
	start := time.Now()
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("reader got in %v after the waiting writer was killed", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("reader still waiting 10 s after the waiting writer was killed")
	}
	if err := r1.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestTurnstileSymlinkNotFollowed: a symlink where the turnstile file goes
// is refused, by a reader that looks at it and by a writer that would
// mark it, and nothing is created through it.
func TestTurnstileSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Symlink(victim, filepath.Join(dir, turnName(fileName("x")))); err != nil {
		t.Fatal(err)
	}
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.RWMutex("x").TryRLock(t.Context())
	if err == nil {
		l.Unlock(t.Context())
	}
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("TryRLock with a symlink at the turnstile = %v; want an error saying so", err)
	}
	w, err := c.Mutex("x").Lock(t.Context()) // no wait: no mark
	if err != nil {
		t.Fatal(err)
	}
	l, err = c.RWMutex("x").Lock(t.Context()) // must wait: marks
	if err == nil {
		l.Unlock(t.Context())
	}
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("a waiting Lock with a symlink at the turnstile = %v; want an error saying so", err)
	}
	w.Unlock(t.Context())
	if _, err := os.Lstat(victim); err == nil {
		t.Errorf("a file was created through the symlink at %s", victim)
	}
}
