package filelock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// parked waits until n goroutines are blocked in wait, the one place where
// a waiting Acquire sleeps.
func parked(t *testing.T, n int) {
	t.Helper()
	inStack(t, "dlock/filelock.(*waiter).wait(", "[select", n)
}

// inStack waits until n goroutines are in state with fn on their stack.
func inStack(t *testing.T, fn, state string, n int) {
	t.Helper()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for {
		k := runtime.Stack(buf, true)
		got := 0
		for _, g := range strings.Split(string(buf[:k]), "\n\n") {
			if strings.Contains(g, fn) && strings.Contains(g, state) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines in %s %s after 10 s, want %d", got, state, fn, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type acquired struct {
	l   driver.Lock
	err error
}

func acquireAsync(ctx context.Context, d driver.Driver, name string) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: time.Minute, Wait: true})
		ch <- acquired{l, err}
	}()
	return ch
}

func mustAcquire(t *testing.T, d driver.Driver, name string) driver.Lock {
	t.Helper()
	l, _, err := d.Acquire(context.Background(), driver.Request{Name: name, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestOverflowWakesWaiters: when the inotify queue overflows, the event that
// would have woken a waiter (its holder's release) is lost; every waiter
// must then be woken to look for itself.
func TestOverflowWakesWaiters(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if limit > 1<<20 {
		t.Skipf("fs.inotify.max_queued_events = %d: too many events to overflow in a test", limit)
	}
	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	hx, hy := mustAcquire(t, h, "x"), mustAcquire(t, h, "y")
	defer hy.Release(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wx, wy := acquireAsync(ctx, d, "x"), acquireAsync(ctx, d, "y")
	parked(t, 2)

	// Hold the notifier's reader off while the queue fills with events on
	// y and overflows; then release x, whose close event is dropped.
	d.ino.mu.Lock()
	y := filepath.Join(dir, fileName("y"))
	for i := range limit + 1000 {
		// Alternate two kinds of event: the kernel merges repeats.
		if i%2 == 0 {
			if err := os.Chmod(y, 0o600); err != nil {
				d.ino.mu.Unlock()
				t.Fatal(err)
			}
		} else if f, err := os.Open(y); err == nil {
			f.Close()
		}
	}
	if err := hx.Release(context.Background()); err != nil {
		d.ino.mu.Unlock()
		t.Fatal(err)
	}
	d.ino.mu.Unlock()

	select {
	case r := <-wx:
		if r.err != nil {
			t.Fatalf("waiter on x: %v", r.err)
		}
		r.l.Release(context.Background())
	case <-time.After(10 * time.Second):
		t.Fatal("x was released during an inotify queue overflow; its waiter still sleeps 10 s later")
	}
	cancel()
	if r := <-wy; r.err == nil {
		r.l.Release(context.Background())
	}
}

// TestCloseEndsWaiters: closing the driver ends a waiting Acquire with
// ErrClosed, whatever its context.
func TestCloseEndsWaiters(t *testing.T) {
	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	hl := mustAcquire(t, h, "x")
	defer hl.Release(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := acquireAsync(ctx, d, "x")
	parked(t, 1)
	d.Close()
	select {
	case r := <-w:
		if !errors.Is(r.err, driver.ErrClosed) {
			t.Errorf("waiting Acquire after Close = %v, want ErrClosed", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting Acquire still waits 5 s after its driver was closed")
	}
}

const limitChildEnv = "DLOCK_FILELOCK_LIMIT_CHILD"

// limitChild uses up its user's inotify instances, then waits for a held
// lock and takes a free one, and prints what happened.
func limitChild() int {
	n := 0
	for ; n < 1<<16; n++ {
		if _, err := unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
			if !errors.Is(err, unix.EMFILE) {
				fmt.Println("inotify_init:", err)
				return 1
			}
			break
		}
	}
	fmt.Printf("instances taken: %d\n", n)
	d, err := open(os.Getenv("DIR"))
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = d.Acquire(ctx, driver.Request{Name: "held", TTL: time.Minute, Wait: true})
	fmt.Printf("wait: unavailable=%v err=%v\n", errors.Is(err, driver.ErrUnavailable), err)
	l, _, err := d.Acquire(ctx, driver.Request{Name: "free", TTL: time.Minute})
	fmt.Printf("hold: err=%v\n", err)
	if err != nil {
		return 0
	}
	// Observing needs a watch; reading the holder does not.
	_, err = d.Observe(ctx, "free")
	fmt.Printf("observe: unavailable=%v err=%v\n", errors.Is(err, driver.ErrUnavailable), err)
	h, err := d.Holder(ctx, "free")
	fmt.Printf("holder: ours=%v err=%v\n", h.Token == l.Token(), err)
	// A blocking Lock of another client of this process, which cannot
	// watch either, gets the lock once it is given back: the portable
	// layer retries the driver's ErrUnavailable.
	c, err := New(os.Getenv("DIR"))
	if err != nil {
		fmt.Println("New:", err)
		return 1
	}
	defer c.Close()
	got := make(chan error, 1)
	go func() {
		l, err := c.Mutex("free").Lock(ctx)
		if err == nil {
			err = l.Unlock(ctx)
		}
		got <- err
	}()
	if err := l.Release(ctx); err != nil {
		fmt.Println("release:", err)
		return 1
	}
	start := time.Now()
	err = <-got
	fmt.Printf("lock after release: err=%v (%v)\n", err, time.Since(start).Round(time.Millisecond))
	return 0
}

// TestInotifyInstanceLimit: a process of a user who has reached
// fs.inotify.max_user_instances cannot wait on events. Its waiting Acquire
// fails with an error that may pass (the portable layer retries it with
// backoff) and names the limit; taking a free lock still works, as does
// reading its holder, while Observe fails the same way. The child
// runs as nobody so that using up the limit disturbs no one else.
func TestInotifyInstanceLimit(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	for _, p := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(base, "filelock.test")
	if err := copyFile(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	locks := filepath.Join(base, "locks")
	if err := os.Mkdir(locks, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(locks, otherUID, otherUID); err != nil {
		t.Fatal(err)
	}
	h, err := open(locks)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	hl := mustAcquire(t, h, "held")
	defer hl.Release(context.Background())
	// Hand what root made in nobody's directory to nobody.
	ents, err := os.ReadDir(locks)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Chown(filepath.Join(locks, e.Name()), otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), limitChildEnv+"=1", "DIR="+locks)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
	out, err := cmd.CombinedOutput()
	t.Logf("child (uid %d):\n%s", otherUID, out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !bytes.Contains(out, []byte("wait: unavailable=true")) || !bytes.Contains(out, []byte("fs.inotify.max_user_instances")) {
		t.Errorf("waiting at the inotify instance limit: want an error matching ErrUnavailable that names fs.inotify.max_user_instances")
	}
	if !bytes.Contains(out, []byte("hold: err=<nil>")) {
		t.Errorf("taking a free lock at the inotify instance limit failed")
	}
	if !bytes.Contains(out, []byte("observe: unavailable=true")) {
		t.Errorf("Observe at the inotify instance limit: want an error matching ErrUnavailable")
	}
	if !bytes.Contains(out, []byte("holder: ours=true err=<nil>")) {
		t.Errorf("Holder at the inotify instance limit: want the holder, read without a watch")
	}
	if !bytes.Contains(out, []byte("lock after release: err=<nil>")) {
		t.Errorf("a blocking Lock at the inotify instance limit did not get the lock once it was free")
	}
}

func copyFile(dst string, mode os.FileMode) error {
	src, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
