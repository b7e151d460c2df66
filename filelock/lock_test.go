package filelock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/memlock"
)

// TestHeldFile: HeldFile gives the open file carrying the flock of a held
// file lock, and nothing for another driver's lease or an ended one.
func TestHeldFile(t *testing.T) {
	if f, ok := HeldFile(nil); f != nil || ok {
		t.Fatalf("HeldFile(nil) = %v, %v; want nil, false", f, ok)
	}
	mc, err := memlock.New()
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	ml, err := mc.Mutex("held").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Unlock(t.Context())
	if f, ok := HeldFile(ml); f != nil || ok {
		t.Fatalf("HeldFile of a memlock lease = %v, %v; want nil, false", f, ok)
	}

	dir := t.TempDir()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Mutex("held").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f, ok := HeldFile(l)
	if f == nil || !ok {
		t.Fatalf("HeldFile of a held lock = %v, %v; want its file", f, ok)
	}
	got, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, fileName("held"))
	if want, err := os.Stat(path); err != nil || !os.SameFile(got, want) {
		t.Fatalf("HeldFile gave %s, want the lock file %s (%v)", f.Name(), path, err)
	}
	// It is the file the flock is on: another open file of it cannot lock it.
	other, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := unix.Flock(int(other.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("flock of another open file of the held lock file = %v, want EWOULDBLOCK", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock through the held file = %v, want nil (the lock is on it)", err)
	}

	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f, ok := HeldFile(l); f != nil || ok {
		t.Fatalf("HeldFile after Unlock = %v, %v; want nil, false", f, ok)
	}
	if f := l.Driver().(interface{ File() *os.File }).File(); f != nil {
		t.Fatalf("File() after Unlock = %v, want nil", f)
	}
}
