package filelock

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"

	"golang.org/x/sys/unix"
)

// BenchmarkUncontended: Lock+Unlock through the portable API against the
// floor, a bare open+flock+unlock+close of the same file.
func BenchmarkUncontended(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	b.Run("floor", func(b *testing.B) {
		path := filepath.Join(dir, "floor")
		b.ReportAllocs()
		for b.Loop() {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				b.Fatal(err)
			}
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			f.Close()
		}
	})
	// The least a fenced file lock does: the floor plus reading and
	// writing the token.
	b.Run("floor+token", func(b *testing.B) {
		path := filepath.Join(dir, "floor-token")
		b.ReportAllocs()
		buf := make([]byte, 32)
		for b.Loop() {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
				b.Fatal(err)
			}
			n, _ := f.ReadAt(buf, 0)
			f.WriteAt(buf[:max(n, 8)], 0)
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			f.Close()
		}
	})
	// The driver alone, without the portable lease around it.
	b.Run("driver", func(b *testing.B) {
		d, err := open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		req := driver.Request{Name: "bench-driver", TTL: time.Minute}
		b.ReportAllocs()
		for b.Loop() {
			l, _, err := d.Acquire(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("filelock", func(b *testing.B) {
		c, err := New(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		m := c.Mutex("bench")
		b.ReportAllocs()
		for b.Loop() {
			l, err := m.Lock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Unlock(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandoff: one op = a holder releases and a blocked waiter (another
// client) takes the lock, then gives it back.
func BenchmarkHandoff(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	a, _ := New(dir)
	w, _ := New(dir)
	defer a.Close()
	defer w.Close()
	b.ReportAllocs()
	for b.Loop() {
		la, err := a.Mutex("h").Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			lw, err := w.Mutex("h").Lock(ctx)
			if err == nil {
				err = lw.Unlock(ctx)
			}
			got <- err
		}()
		if err := la.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
	}
}
