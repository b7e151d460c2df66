package filelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// TestCloseDropsHeldLocks: a driver's Close frees the locks it still holds,
// as the end of an engine session would, instead of leaving them held until
// the process exits (or the garbage collector closes the files).
func TestCloseDropsHeldLocks(t *testing.T) {
	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	l := mustAcquire(t, d, "x")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	o, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ol, _, err := o.Acquire(context.Background(), driver.Request{Name: "x", TTL: time.Minute})
	if err != nil {
		t.Fatalf("TryLock after the holder's driver was closed: %v", err)
	}
	defer ol.Release(context.Background())
	if err := l.Release(context.Background()); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("Release after Close = %v, want ErrLockLost", err)
	}
}

// TestReleaseTwice: the portable layer may call Release again after a
// failure; a second call changes nothing and says the lock is gone.
func TestReleaseTwice(t *testing.T) {
	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	l := mustAcquire(t, d, "x")
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("second Release = %v, want ErrLockLost", err)
	}
	o := mustAcquire(t, d, "x")
	if err := l.Release(context.Background()); !errors.Is(err, driver.ErrLockLost) {
		t.Errorf("Release of an old lock while another holds it = %v, want ErrLockLost", err)
	}
	if err := o.Release(context.Background()); err != nil {
		t.Errorf("the new holder's Release: %v", err)
	}
}

// TestTokensLockStopsAtClose: a grant waiting for the tokens file's flock,
// held by a process that stopped mid-update, ends when its driver is
// closed.
func TestTokensLockStopsAtClose(t *testing.T) {
	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Another process's update in progress: the tokens file locked.
	holdTokensFile(t, dir)
	got := make(chan error, 1)
	go func() {
		l, _, err := d.Acquire(context.Background(), driver.Request{Name: "x", TTL: time.Minute})
		if err == nil {
			l.Release(context.Background())
		}
		got <- err
	}()
	inStack(t, "dlock/filelock.flockCtx(", "[select", 1) // backing off
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-got:
		if !errors.Is(err, driver.ErrClosed) {
			t.Errorf("Acquire after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Acquire still waits for the tokens file 5 s after Close")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestDiskFullIsUnavailable: a full file system may free up; the error says
// so (ErrUnavailable), and a blocking Lock gets the lock once there is room.
func TestDiskFullIsUnavailable(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, _, err = d.Acquire(context.Background(), driver.Request{Name: "x", TTL: time.Minute})
	t.Logf("Acquire on a full file system: %v", err)
	if !errors.Is(err, driver.ErrUnavailable) || !errors.Is(err, unix.ENOSPC) {
		t.Errorf("Acquire on a full file system = %v; want ErrUnavailable wrapping ENOSPC", err)
	}

	c, err := dlock.NewClient(d)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := c.Mutex("x").Lock(context.Background())
		if err == nil {
			err = l.Unlock(context.Background())
		}
		got <- err
	}()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("blocking Lock once there is room: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking Lock still waits 10 s after the file system had room again")
	}
}
