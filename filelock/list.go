package filelock

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/lockname"
)

// List reports the locks of the directory held or awaited now whose names
// start with prefix, in the byte order of their names, each with what
// Status would say of it. It reads the directory, takes every name that
// has a lock file, a turnstile or a semaphore's limit file (files are
// never removed, so that is every name ever used there), and keeps those
// that someone holds or waits for. A name longer than the file names allow
// is kept hashed: it is listed as "~" and the hash, and only when prefix is
// empty. Files whose names no lock has are left out.
//
// Each name is looked at as Status looks (trying its locks, dropped at
// once: a TryLock or TryAcquire made at that very moment can fail), one
// after the other, so the list is no snapshot of one instant; /proc/locks,
// where waiters and readers are counted, is read once for the whole list.
func (d *fileDriver) List(ctx context.Context, prefix string) ([]driver.Listed, error) {
	if err := d.begin(); err != nil {
		return nil, err
	}
	defer d.calls.Done()
	files, err := d.readDir()
	if err != nil {
		return nil, err
	}
	type cand struct{ name, file string }
	var cands []cand
	seen := map[string]bool{}
	for _, f := range files {
		base, ok := lockBase(f)
		if !ok || seen[base] {
			continue
		}
		seen[base] = true
		name, ok := listedName(base)
		if !ok || !strings.HasPrefix(name, prefix) || (prefix != "" && base[0] == '~') {
			continue
		}
		cands = append(cands, cand{name, base + ".lock"})
	}
	slices.SortFunc(cands, func(a, b cand) int { return strings.Compare(a.name, b.name) })
	var ls []driver.Listed
	pl := new(procLocks)
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, busy, err := d.status(c.file, pl)
		if err != nil {
			return nil, fmt.Errorf("filelock: status of %q: %w", c.name, err)
		}
		if busy {
			ls = append(ls, driver.Listed{Name: c.name, Status: st})
		}
	}
	return ls, nil
}

// readDir returns the names in the lock directory, read through a
// descriptor of its own (the client's one is shared).
func (d *fileDriver) readDir() ([]string, error) {
	fd, err := unix.Openat(int(d.dirf.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, mayPass(fmt.Errorf("filelock: %w", &os.PathError{Op: "open", Path: d.dir, Err: err}))
	}
	f := os.NewFile(uintptr(fd), d.dir)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, mayPass(fmt.Errorf("filelock: %w", err))
	}
	return names, nil
}

// lockBase returns the escaped lock name of a lock file, turnstile or
// semaphore limit file name f (NAME of NAME.lock, NAME.writer, NAME.sem).
// The other files of a name (NAME.permitK, NAME.leader) are never there
// without one of these.
func lockBase(f string) (string, bool) {
	for _, ext := range []string{".lock", ".writer", ".sem"} {
		if base, ok := strings.CutSuffix(f, ext); ok && base != "" {
			return base, true
		}
	}
	return "", false
}

// listedName returns the name whose escaped form (fileName's, less
// ".lock") is base: the name itself, or for a hashed one base ("~" and the
// hex SHA-256). A base no name escapes to (a stranger's file, one too long
// for fileName to have made) has none.
func listedName(base string) (string, bool) {
	if len(base) > maxName {
		return "", false
	}
	if base[0] == '~' {
		return base, isHash(base[1:])
	}
	return lockname.Unescape(base)
}

// isHash reports whether s is a hex SHA-256 as lockname writes it.
func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
