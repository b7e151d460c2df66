package filelock

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
)

// lockN takes and gives back the lock n times and returns the last token.
func lockN(t *testing.T, c *dlock.Client, name string, n int) uint64 {
	t.Helper()
	var last uint64
	for range n {
		l, err := c.Mutex(name).Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if l.Token() <= last {
			t.Fatalf("token %d after %d", l.Token(), last)
		}
		last = l.Token()
		if err := l.Unlock(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return last
}

// TestStrayTextInLockFile: a lock file whose text is not a token (an editor,
// a stray echo, a torn write) does not make the lock unusable: the next
// holder takes it with a token above every earlier one and writes its token
// over the text.
func TestStrayTextInLockFile(t *testing.T) {
	for _, text := range []string{"garbage\n", "12abc", "-1\n", "99999999999999999999999\n", "\x00\x00\x00"} {
		t.Run(strconv.Quote(text), func(t *testing.T) {
			dir := t.TempDir()
			c, err := New(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			last := lockN(t, c, "job", 3)
			path := filepath.Join(dir, fileName("job"))
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			l, err := c.Mutex("job").Lock(context.Background())
			if err != nil {
				t.Fatalf("Lock with %q in the lock file: %v", text, err)
			}
			defer l.Unlock(context.Background())
			if l.Token() <= last {
				t.Errorf("token %d after %q replaced token %d", l.Token(), text, last)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); got != strconv.FormatUint(l.Token(), 10) {
				t.Errorf("lock file holds %q after the grant, want the token %d", got, l.Token())
			}
			st, err := c.Status(context.Background(), "job")
			if err != nil || !st.Held || st.Token != l.Token() {
				t.Errorf("Status = %+v, %v; want held with token %d", st, err, l.Token())
			}
		})
	}
}

// TestNetworkFS: the file systems where flock(2) does not exclude as on a
// local disk are named, local ones are not. NFS, SMB and 9p cannot be
// mounted on the test machine, so they are told by their statfs magic here;
// TestNetworkFUSERefused mounts a real FUSE file system.
func TestNetworkFS(t *testing.T) {
	for _, tc := range []struct {
		magic   int64
		subtype string
		want    string
	}{
		{unix.NFS_SUPER_MAGIC, "", "NFS"},
		{unix.CIFS_SUPER_MAGIC, "", "SMB/CIFS"},
		{unix.SMB2_SUPER_MAGIC, "", "SMB/CIFS"},
		{unix.V9FS_MAGIC, "", "9p"},
		{unix.FUSE_SUPER_MAGIC, "sshfs", "FUSE (sshfs)"},
		{unix.FUSE_SUPER_MAGIC, "fuse-overlayfs", ""},
		{unix.FUSE_SUPER_MAGIC, "", ""},
		{unix.TMPFS_MAGIC, "", ""},
		{unix.EXT4_SUPER_MAGIC, "", ""},
	} {
		if got := networkFS(tc.magic, tc.subtype); got != tc.want {
			t.Errorf("networkFS(%#x, %q) = %q, want %q", tc.magic, tc.subtype, got, tc.want)
		}
	}
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := checkLocalFS(int(f.Fd()), dir); err != nil {
			t.Errorf("checkLocalFS(%s): %v", dir, err)
		}
	}
	// The mount table lookup FUSE relies on, on a mount of known type.
	f, err := os.Open("/dev/shm")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil || stx.Mask&unix.STATX_MNT_ID == 0 {
		t.Skipf("statx gives no mount ID here: %v", err)
	}
	if got := mountFSType(stx.Mnt_id); got != "tmpfs" {
		t.Errorf("mountFSType(/dev/shm) = %q, want tmpfs", got)
	}
}

// TestTokensFileStrayText: stray text in the directory's tokens file counts
// as 0; the lock file's count carries on, and the tokens file is rewritten.
func TestTokensFileStrayText(t *testing.T) {
	dir := t.TempDir()
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	last := lockN(t, c, "job", 3)
	tokens := filepath.Join(dir, tokensName)
	if err := os.WriteFile(tokens, []byte("not a number, and longer than any token is\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	next := lockN(t, c, "job", 1)
	if next <= last {
		t.Errorf("token %d after %d", next, last)
	}
	b, err := os.ReadFile(tokens)
	if err != nil {
		t.Fatal(err)
	}
	if c := parseCount(b); c.last != next || c.reserved < next || c.boot != bootID() {
		t.Errorf("tokens file holds %q, want %d as the last token, a reserve above it and this boot's ID", b, next)
	}
}

// TestTokensAfterSystemCrash: a tokens file written in another boot may
// have lost the writes made after its last sync; the count continues above
// what was reserved (synced) then. In this boot it continues from the last
// token.
func TestTokensAfterSystemCrash(t *testing.T) {
	for _, tc := range []struct {
		boot string
		want uint64
	}{
		{bootID(), 501},
		{"another-boot", 2001},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, tokensName), []byte("500 2000 "+tc.boot+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fileName("job")), []byte("3\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := lockN(t, c, "job", 1); got != tc.want {
			t.Errorf("tokens file \"500 2000 %s\": token %d, want %d", tc.boot, got, tc.want)
		}
		c.Close()
	}
}

// TestTokensFileSymlink: a symlink in place of the tokens file is refused,
// not followed.
func TestTokensFileSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Symlink(victim, filepath.Join(dir, tokensName)); err != nil {
		t.Fatal(err)
	}
	c, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if l, err := c.Mutex("job").TryLock(context.Background()); err == nil {
		l.Unlock(context.Background())
		t.Error("TryLock with a symlinked tokens file succeeded")
	} else if !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("TryLock with a symlinked tokens file = %v, want an error naming the symbolic link", err)
	}
	if _, err := os.Lstat(victim); err == nil {
		t.Error("a file was created through the symlink")
	}
	// And the lock is free again: nothing is left held.
	if st, err := c.Status(context.Background(), "job"); err != nil || st.Held {
		t.Errorf("Status after the failed grant = %+v, %v; want not held", st, err)
	}
}

// TestTokensFileReplacedWhileWatched: once a client has found the tokens
// file in place under its watch, it no longer looks it up for each grant;
// a file put in its place is still the one counted from, as soon as the
// watch has told of it. Here the new file holds a count far above the lock
// file's: the next grant's token is above it.
func TestTokensFileReplacedWhileWatched(t *testing.T) {
	dir := t.TempDir()
	c, d := keptClient(t, dir)
	lockN(t, c, "job", 3)
	d.takeTurn(t.Context())
	seen := d.tokSeen
	d.giveTurn()
	if !seen {
		t.Fatal("the tokens file is still looked up for every grant under the directory's watch")
	}
	before := d.dirEvents.Load()
	const high = 1_000_000
	tokens := filepath.Join(dir, tokensName)
	text := tokenCount{last: high, reserved: high + tokensReserve, boot: bootID()}.text()
	if err := os.WriteFile(tokens+".new", text, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tokens+".new", tokens); err != nil {
		t.Fatal(err)
	}
	// The watch tells of the rename asynchronously: wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for d.dirEvents.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("the directory's watch did not tell of the tokens file's rename within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if got := lockN(t, c, "job", 1); got <= high {
		t.Fatalf("token %d after the tokens file was replaced by one counting %d: the old file was counted from", got, high)
	}
}
