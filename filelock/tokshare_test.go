package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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
	tf := holdTokensFile(t, dir)
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
	inStack(t, "dlock/filelock.(*fileDriver).takeTurnOrResult(", "[select", 2)
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

// TestTokensBatchLeaderLeaves: grants queued behind a client that waits
// for the tokens file's flock (held by a process stopped mid-update) are
// counted once that client has given up (its ctx ended): the next in line
// takes the turn and counts them all, each with a token of its own, and
// the file's count is the highest.
func TestTokensBatchLeaderLeaves(t *testing.T) {
	dir := t.TempDir()
	var ds [4]*fileDriver
	for i := range ds {
		d, err := open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		ds[i] = d
	}
	tf := holdTokensFile(t, dir)
	type grant struct {
		tok uint64
		err error
	}
	acquire := func(ctx context.Context, d *fileDriver, name string) <-chan grant {
		got := make(chan grant, 1)
		go func() {
			l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: time.Minute})
			if err != nil {
				got <- grant{err: err}
				return
			}
			got <- grant{tok: l.Token()}
			l.Release(context.Background())
		}()
		return got
	}
	ctx, cancel := context.WithCancel(context.Background())
	first := acquire(ctx, ds[0], "a")
	inStack(t, "dlock/filelock.flockCtx(", "[select", 1)
	var queued []<-chan grant
	for i, d := range ds[1:] {
		queued = append(queued, acquire(context.Background(), d, fmt.Sprint("q", i)))
	}
	inStack(t, "dlock/filelock.(*fileDriver).takeTurnOrResult(", "[select", len(queued))
	cancel()
	if g := <-first; !errors.Is(g.err, context.Canceled) {
		t.Fatalf("the client in turn, its ctx cancelled: %v, want context.Canceled", g.err)
	}
	inStack(t, "dlock/filelock.flockCtx(", "[select", 1) // the next in turn
	unix.Flock(int(tf.Fd()), unix.LOCK_UN)
	seen := map[uint64]bool{}
	var most uint64
	for _, q := range queued {
		g := <-q
		if g.err != nil {
			t.Fatalf("queued grant: %v", g.err)
		}
		if seen[g.tok] {
			t.Fatalf("token %d given twice", g.tok)
		}
		seen[g.tok] = true
		most = max(most, g.tok)
	}
	wantTokensCount(t, dir, most)
}

// TestTokensBatchedGrants: clients of one process granting many names at
// once, writers and readers, share the tokens file's updates; every grant
// still gets a token of its own, a name's writers get increasing ones in
// the order they held it, and the file counts the highest.
func TestTokensBatchedGrants(t *testing.T) {
	dir := t.TempDir()
	const clients, rounds, names = 8, 60, 5
	var (
		mu     sync.Mutex
		seen   = map[uint64]bool{}
		most   uint64
		byName [names][]uint64 // writers' tokens in the order they held
	)
	var wg sync.WaitGroup
	for i := range clients {
		d, err := open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		wg.Go(func() {
			for j := range rounds {
				n := (i + j) % names
				mode := driver.Exclusive
				if j%3 == 0 {
					mode = driver.Shared
				}
				l, _, err := d.Acquire(context.Background(), driver.Request{Name: fmt.Sprint("n", n), TTL: time.Minute, Mode: mode, Wait: true})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[l.Token()] {
					t.Errorf("token %d given twice", l.Token())
				}
				seen[l.Token()] = true
				most = max(most, l.Token())
				if mode == driver.Exclusive {
					byName[n] = append(byName[n], l.Token())
				}
				mu.Unlock()
				if err := l.Release(context.Background()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for n, toks := range byName {
		for k := 1; k < len(toks); k++ {
			if toks[k] <= toks[k-1] {
				t.Errorf("name n%d: token %d held after %d", n, toks[k], toks[k-1])
			}
		}
	}
	wantTokensCount(t, dir, most)
}

// holdTokensFile takes the tokens file's flock in dir as another process
// in the middle of an update would; the file is closed when the test ends.
func holdTokensFile(t *testing.T, dir string) *os.File {
	t.Helper()
	tf, err := os.OpenFile(filepath.Join(dir, tokensName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tf.Close() })
	if err := unix.Flock(int(tf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return tf
}

// wantTokensCount checks that the tokens file in dir counts most, the
// highest token granted.
func wantTokensCount(t *testing.T, dir string, most uint64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, tokensName))
	if err != nil {
		t.Fatal(err)
	}
	if c := parseCount(b); c.last != most {
		t.Errorf("tokens file counts %d, want %d, the highest token granted", c.last, most)
	}
}
