package filelock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// keptClient opens a client whose driver the test can look into.
func keptClient(t *testing.T, dir string) (*dlock.Client, *fileDriver) {
	t.Helper()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dlock.NewClient(d)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, d
}

func kept(d *fileDriver, name string) (cachedFiles, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.cache[fileName(name)]
	return c, ok
}

// lockUnlock takes and gives back a lock, which keeps its files open.
func lockUnlock(t *testing.T, acquire func(context.Context) (*dlock.Lease, error)) {
	t.Helper()
	l, err := acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestKeptFileWakesWaiters: a release that keeps the lock file open wakes
// a writer waiting in another client (it waits on inotify only), and a
// reader waiting behind a writer, as the close it stands for would.
func TestKeptFileWakesWaiters(t *testing.T) {
	const bound = 2 * time.Second
	for _, reader := range []bool{false, true} {
		t.Run(fmt.Sprintf("reader=%v", reader), func(t *testing.T) {
			dir := t.TempDir()
			c1, d1 := keptClient(t, dir)
			c2 := newClient(t, dir)
			lockUnlock(t, c1.Mutex("x").Lock)
			if _, ok := kept(d1, "x"); !ok {
				t.Fatal("the lock file was not kept open after Unlock")
			}
			l, err := c1.Mutex("x").Lock(t.Context()) // on the kept file
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			go func() {
				var w *dlock.Lease
				var err error
				if reader {
					w, err = c2.RWMutex("x").RLock(t.Context())
				} else {
					w, err = c2.Mutex("x").Lock(t.Context())
				}
				if err == nil {
					err = w.Unlock(context.Background())
				}
				got <- err
			}()
			if reader {
				// The reader counts as waiting once it marked byte 1;
				// a held writer makes it wait on the lock file itself.
				waitForWaiters(t, c1, "x", 1)
			} else {
				markedTurnstile(t, dir, "x")
			}
			released := time.Now()
			if err := l.Unlock(t.Context()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-got:
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("waiter granted %v after the release", time.Since(released))
			case <-time.After(bound):
				t.Fatalf("waiter not granted within %v of a release that kept the file open: missed wake-up", bound)
			}
		})
	}
}

// waitForWaiters waits until Status counts n waiters of name.
func waitForWaiters(t *testing.T, c *dlock.Client, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Waiters >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters of %q after 10 s, want %d", st.Waiters, name, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeptLeaderFileWakesObservers: a release that keeps the leader file
// open tells observers that nobody holds, as the close it stands for
// would; a grant on kept files shows its holder.
func TestKeptLeaderFileWakesObservers(t *testing.T) {
	dir := t.TempDir()
	c1, d1 := keptClient(t, dir)
	c2 := newClient(t, dir)
	e := c1.Election("e")
	l, err := e.Campaign(t.Context(), "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c, ok := kept(d1, "e"); !ok || c.val == nil {
		t.Fatalf("the lock and leader files were not kept open after Resign: %+v, %v", c, ok)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := c2.Election("e").Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{})
	for i := range 3 {
		l, err := e.Campaign(t.Context(), fmt.Sprintf("v%d", i+2))
		if err != nil {
			t.Fatal(err)
		}
		nextLeader(t, ch, dlock.Leader{Value: fmt.Sprintf("v%d", i+2), Term: l.Token()})
		if err := l.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		nextLeader(t, ch, dlock.Leader{})
	}
}

// TestHandedFileNotKept: a lock whose file was handed out (HeldFile, as
// `dlock run` does) closes it at Unlock: a copy held elsewhere must not
// come to hold the name's next grant too.
func TestHandedFileNotKept(t *testing.T) {
	c, d := keptClient(t, t.TempDir())
	l, err := c.Mutex("h").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := HeldFile(l); !ok {
		t.Fatal("HeldFile: no file")
	}
	if err := l.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, ok := kept(d, "h"); ok {
		t.Fatal("a file handed out by HeldFile was kept open for the next grant")
	}
}

// TestKeptFileReplaced: a kept lock file replaced before the next grant is
// not used for it: the grant locks the file at the name, so a second
// client that holds that file keeps the first out.
func TestKeptFileReplaced(t *testing.T) {
	dir := t.TempDir()
	c1, d1 := keptClient(t, dir)
	c2 := newClient(t, dir)
	lockUnlock(t, c1.Mutex("r").Lock)
	if _, ok := kept(d1, "r"); !ok {
		t.Fatal("the lock file was not kept open after Unlock")
	}
	path := filepath.Join(dir, fileName("r"))
	if err := os.WriteFile(path+".new", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	l2, err := c2.Mutex("r").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Unlock(t.Context())
	if l, err := c1.Mutex("r").TryLock(t.Context()); err == nil {
		l.Unlock(t.Context())
		t.Fatal("TryLock on a kept file that was replaced got the lock another client holds")
	}
}

// TestKeptFilesBounded: the files of at most maxCached names are kept open
// across the clients of the process, and none once they are closed.
func TestKeptFilesBounded(t *testing.T) {
	dir := t.TempDir()
	c1, d1 := keptClient(t, dir)
	c2, d2 := keptClient(t, dir)
	for i := range maxCached + 20 {
		c := c1
		if i%2 == 1 {
			c = c2
		}
		lockUnlock(t, c.Mutex(fmt.Sprintf("n%d", i)).Lock)
	}
	d1.mu.Lock()
	n := len(d1.cache)
	d1.mu.Unlock()
	d2.mu.Lock()
	n += len(d2.cache)
	d2.mu.Unlock()
	if n > maxCached || cachedNames.Load() > maxCached {
		t.Fatalf("%d names kept open (count %d), want at most %d", n, cachedNames.Load(), maxCached)
	}
	if n < maxCached/2 {
		t.Fatalf("only %d names kept open of %d used", n, maxCached+20)
	}
	c1.Close()
	c2.Close()
	if got := cachedNames.Load(); got != 0 {
		t.Fatalf("%d names kept open after the clients were closed", got)
	}
}

// TestHoldersNotWokenByNewNames: the directory's watch asks for the
// entries created only while someone observes: a holder's client reads no
// event while another client uses new names (each makes its lock and
// leader files), and reads them once an observer is subscribed.
func TestHoldersNotWokenByNewNames(t *testing.T) {
	dir := t.TempDir()
	c1, d1 := keptClient(t, dir)
	c2 := newClient(t, dir)
	l, err := c1.Mutex("held").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(t.Context())
	count := func(prefix string) uint64 {
		t.Helper()
		d1.ino.mu.Lock()
		before := d1.ino.nread
		d1.ino.mu.Unlock()
		events := d1.dirEvents.Load()
		for i := range 10 {
			lockUnlock(t, c2.Mutex(fmt.Sprintf("%s%d", prefix, i)).Lock)
		}
		// A rename, which holders are told of, comes after them all: once
		// it is read, so is anything they made.
		tmp := filepath.Join(dir, prefix+".tmp")
		if err := os.WriteFile(tmp, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, prefix+".moved")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for d1.dirEvents.Load() == events {
			if time.Now().After(deadline) {
				t.Fatal("the rename was not told to the holder's client within 10 s")
			}
			time.Sleep(time.Millisecond)
		}
		d1.ino.mu.Lock()
		defer d1.ino.mu.Unlock()
		return d1.ino.nread - before
	}
	if n := count("new"); n > 2 {
		t.Errorf("the holder's client read %d events while another used 10 new names, want only the rename's", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := c1.Election("obs").Observe(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count("seen"); n < 20 {
		t.Errorf("an observing client read %d events while another used 10 new names, want their files' creation", n)
	}
}
