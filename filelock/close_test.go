package filelock

import (
	"context"
	"errors"
	"testing"
	"time"

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
