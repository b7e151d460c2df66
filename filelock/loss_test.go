package filelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// What an operator (or another user) can do to a held lock file. Each
// leaves a second process free to lock a different file of the same name.
var tampering = []struct {
	name string
	do   func(dir, path string) error
}{
	{"removed", func(_, path string) error { return os.Remove(path) }},
	{"replaced by an empty file", func(_, path string) error {
		if err := os.WriteFile(path+".new", nil, 0o600); err != nil {
			return err
		}
		return os.Rename(path+".new", path)
	}},
	{"replaced by a copy", func(_, path string) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path+".new", b, 0o600); err != nil {
			return err
		}
		return os.Rename(path+".new", path)
	}},
	{"renamed away", func(_, path string) error { return os.Rename(path, path+".old") }},
	{"directory moved", func(dir, _ string) error { return os.Rename(dir, dir+".old") }},
}

// heldKinds are the leases a file can carry: a Mutex's (a writer's), a
// reader's, a semaphore permit's; file is the one it holds.
var heldKinds = []struct {
	kind    string
	file    string
	acquire func(c *dlock.Client) func(context.Context) (*dlock.Lease, error)
}{
	{"mutex", fileName("job"), func(c *dlock.Client) func(context.Context) (*dlock.Lease, error) { return c.Mutex("job").Lock }},
	{"reader", fileName("job"), func(c *dlock.Client) func(context.Context) (*dlock.Lease, error) {
		return c.RWMutex("job").RLock
	}},
	{"permit", permitName(fileName("job"), 1), func(c *dlock.Client) func(context.Context) (*dlock.Lease, error) {
		return c.Semaphore("job", 2).Acquire
	}},
}

// TestTamperedLockFileEndsLease: the holder learns at once, not at its next
// renewal (TTL/3 = 20 s here), that its lock file is no longer the lock's.
func TestTamperedLockFileEndsLease(t *testing.T) {
	for _, k := range heldKinds {
		for _, tc := range tampering {
			t.Run(k.kind+"/"+tc.name, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "locks")
				c, err := New(dir, dlock.WithTTL(time.Minute))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				l, err := k.acquire(c)(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				if err := tc.do(dir, filepath.Join(dir, k.file)); err != nil {
					t.Fatal(err)
				}
				select {
				case <-l.Done():
					t.Logf("lease ended %v after the lock file was %s", time.Since(start), tc.name)
				case <-time.After(5 * time.Second):
					t.Fatalf("lease still held 5 s after its lock file was %s (renewal is every 20 s)", tc.name)
				}
				if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
					t.Errorf("Err() = %v, want ErrLockLost", err)
				}
				if tc.name == "directory moved" {
					// The client's directory is gone from its path: locking
					// there again must fail, not spin or lock the moved files.
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					l, err := k.acquire(c)(ctx)
					if err == nil {
						l.Unlock(ctx)
					}
					if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "moved") {
						t.Errorf("acquire after the directory moved = %v; want an error at once saying it moved", err)
					}
				}
			})
		}
	}
}

// TestTokensIncreaseAcrossTamperedFile: the next holder after a removed or
// replaced lock file gets a token above every earlier one.
func TestTokensIncreaseAcrossTamperedFile(t *testing.T) {
	for _, tc := range tampering {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "locks")
			c, err := New(dir, dlock.WithTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var last uint64
			for range 5 {
				l, err := c.Mutex("job").Lock(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				last = l.Token()
				if err := l.Unlock(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.do(dir, filepath.Join(dir, fileName("job"))); err != nil {
				t.Fatal(err)
			}
			if tc.name == "directory moved" {
				// The tokens moved with the directory: nothing is left
				// to continue from, as after `rm -r dir`.
				t.Skip("a moved directory takes its tokens with it")
			}
			c2, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			l, err := c2.Mutex("job").Lock(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer l.Unlock(context.Background())
			if l.Token() <= last {
				t.Errorf("token %d after the lock file was %s; the last one before was %d", l.Token(), tc.name, last)
			}
		})
	}
}
