package filelock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// otherUID is the "second local user" of these tests: nobody.
const otherUID = 65534

// fakeTmp makes a world-writable, sticky directory like /tmp and makes it the
// temp dir for the default lock directory ($TMPDIR/dlock-EUID, with
// XDG_RUNTIME_DIR unset, as under cron, systemd units and sudo). It returns
// that temp dir and the default lock directory in it.
func fakeTmp(t *testing.T) (tmp, def string) {
	t.Helper()
	tmp = filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", tmp)
	def = filepath.Join(tmp, "dlock-"+strconv.Itoa(os.Geteuid()))
	if got := DefaultDir(); got != def {
		t.Fatalf("DefaultDir() = %q, want %q", got, def)
	}
	return tmp, def
}

// needRoot skips tests that must hand files to another user.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another user (chown)")
	}
}

// tryDefault opens the default directory and, if that succeeds, takes a lock
// in it, as `dlock run` would. It returns the first error.
func tryDefault(t *testing.T, name string) error {
	t.Helper()
	d, err := open("")
	if err != nil {
		return err
	}
	defer d.Close()
	l, _, err := d.Acquire(context.Background(), driver.Request{Name: name, TTL: 1e9})
	if err != nil {
		return err
	}
	return errors.Join(errors.New("lock taken in the untrusted directory"), l.Release(context.Background()))
}

// TestDefaultDirOwnedByOther: another local user pre-created the default
// directory (world-writable) and planted a symlink where the lock file goes.
// Opening must refuse, naming the directory and the owner expected, and no
// file may be created through the symlink.
func TestDefaultDirOwnedByOther(t *testing.T) {
	needRoot(t)
	tmp, def := fakeTmp(t)
	if err := os.Mkdir(def, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(def, 0o777); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(tmp, "victim")
	link := filepath.Join(def, fileName("job"))
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{def, link} {
		if err := os.Lchown(p, otherUID, otherUID); err != nil {
			t.Fatal(err)
		}
	}

	err := tryDefault(t, "job")
	if err == nil || !strings.Contains(err.Error(), def) || !strings.Contains(err.Error(), "uid "+strconv.Itoa(otherUID)) {
		t.Errorf("open of a default directory owned by uid %d = %v; want an error naming %s and its owner", otherUID, err, def)
	}
	if _, serr := os.Lstat(victim); serr == nil {
		t.Errorf("a file was created through the planted symlink at %s", victim)
	}
}

// TestDefaultDirSymlink: the default directory is a symlink to a directory
// of the attacker's (or anyone's): refused, and nothing is created there.
func TestDefaultDirSymlink(t *testing.T) {
	tmp, def := fakeTmp(t)
	elsewhere := filepath.Join(tmp, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, def); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		for _, p := range []string{def, elsewhere} {
			if err := os.Lchown(p, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
		}
	}
	err := tryDefault(t, "job")
	if err == nil || !strings.Contains(err.Error(), def) || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("open of a default directory that is a symlink = %v; want an error naming %s as a symbolic link", err, def)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("files were created through the symlinked directory: %v", ents)
	}
}

// TestDefaultDirWritableByOthers: our own directory, but group- or
// world-writable: anyone could remove or replace its lock files.
func TestDefaultDirWritableByOthers(t *testing.T) {
	for _, mode := range []os.FileMode{0o770, 0o707, 0o777} {
		t.Run(mode.String(), func(t *testing.T) {
			_, def := fakeTmp(t)
			if err := os.Mkdir(def, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(def, mode); err != nil {
				t.Fatal(err)
			}
			err := tryDefault(t, "job")
			if err == nil || !strings.Contains(err.Error(), def) || !strings.Contains(err.Error(), "writable by") {
				t.Errorf("open of a default directory with mode %v = %v; want an error naming %s as writable by others", mode, err, def)
			}
		})
	}
}

// TestDefaultDirParentNotSticky: a temp dir that anyone may write to without
// the sticky bit lets anyone rename our directory away and make their own.
func TestDefaultDirParentNotSticky(t *testing.T) {
	tmp, def := fakeTmp(t)
	if err := os.Chmod(tmp, 0o777); err != nil {
		t.Fatal(err)
	}
	err := tryDefault(t, "job")
	if err == nil || !strings.Contains(err.Error(), tmp) || !strings.Contains(err.Error(), "sticky") {
		t.Errorf("open of %s under a non-sticky world-writable %s = %v; want an error naming the parent and the sticky bit", def, tmp, err)
	}
}

// TestDefaultDirCreated: missing, the default directory is made 0700 and
// owned by us, and locks work in it.
func TestDefaultDirCreated(t *testing.T) {
	_, def := fakeTmp(t)
	if err := tryDefaultOK(t); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(def, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o777 != 0o700 || int(st.Uid) != os.Geteuid() {
		t.Errorf("default directory: mode %o uid %d, want a directory, 0700, uid %d", st.Mode, st.Uid, os.Geteuid())
	}
}

func tryDefaultOK(t *testing.T) error {
	t.Helper()
	d, err := open("")
	if err != nil {
		return err
	}
	defer d.Close()
	l, _, err := d.Acquire(context.Background(), driver.Request{Name: "job", TTL: 1e9})
	if err != nil {
		return err
	}
	return l.Release(context.Background())
}

// TestLockFileSymlinkNotFollowed: in any directory, a symlink where a lock
// file goes is refused, by Acquire and by Status, and nothing is created or
// read through it.
func TestLockFileSymlinkNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Symlink(victim, filepath.Join(dir, fileName("job"))); err != nil {
		t.Fatal(err)
	}
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, wait := range []bool{false, true} {
		l, _, err := d.Acquire(context.Background(), driver.Request{Name: "job", TTL: 1e9, Wait: wait})
		if err == nil {
			l.Release(context.Background())
		}
		if err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("Acquire(Wait: %v) of a lock file that is a symlink = %v; want an error saying so", wait, err)
		}
	}
	if _, err := os.Lstat(victim); err == nil {
		t.Errorf("a file was created through the symlink at %s", victim)
	}
	if err := os.WriteFile(victim, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(context.Background(), "job"); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Status through a symlink = %v; want an error saying so", err)
	}
}
