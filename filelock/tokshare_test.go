package filelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// TestTokensTurnStopsAtCloseAndCtx: clients of one process share the
// tokens file and take turns; one waiting for its turn, behind a client
// that waits for the file's flock (held by a process stopped mid-update),
// ends when its ctx does, and when its driver is closed. The last driver
// closed closes the shared file.
func TestTokensTurnStopsAtCloseAndCtx(t *testing.T) {
	dir := t.TempDir()
	var ds [3]*fileDriver
	for i := range ds {
		d, err := open(dir)
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	if ds[0].tok != ds[1].tok || ds[1].tok != ds[2].tok {
		t.Fatal("drivers of one directory do not share its tokens file")
	}
	tf, err := os.OpenFile(filepath.Join(dir, tokensName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	if err := unix.Flock(int(tf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	acquire := func(ctx context.Context, d *fileDriver, name string) <-chan error {
		got := make(chan error, 1)
		go func() {
			l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: time.Minute})
			if err == nil {
				l.Release(context.Background())
			}
			got <- err
		}()
		return got
	}
	first := acquire(context.Background(), ds[0], "a")
	inStack(t, "dlock/filelock.flockCtx(", "[select", 1) // its turn, backing off
	ctx, cancel := context.WithCancel(context.Background())
	byCtx := acquire(ctx, ds[1], "b")
	byClose := acquire(context.Background(), ds[2], "c")
	inStack(t, "dlock/filelock.(*fileDriver).takeTurn(", "[select", 2)
	cancel()
	if err := within(t, byCtx); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire waiting for its turn, ctx cancelled: %v, want context.Canceled", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- ds[2].Close() }() // it waits for the Acquire
	if err := within(t, byClose); !errors.Is(err, driver.ErrClosed) {
		t.Errorf("Acquire waiting for its turn, driver closed: %v, want ErrClosed", err)
	}
	if err := within(t, closed); err != nil {
		t.Errorf("Close: %v", err)
	}
	// The stopped process goes on: the first grant is made.
	unix.Flock(int(tf.Fd()), unix.LOCK_UN)
	if err := within(t, first); err != nil {
		t.Errorf("Acquire in turn: %v", err)
	}
	for _, d := range ds[:2] {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	tokenShares.mu.Lock()
	left := tokenShares.m[ds[0].dirID]
	tokenShares.mu.Unlock()
	if left != nil {
		t.Errorf("tokens file of the directory still shared after its last driver closed: %d refs", left.refs)
	}
}

func within(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after 5 s")
		return nil
	}
}
