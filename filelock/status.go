package filelock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// Status tells how name is held by trying it: a semaphore's permits (if
// anyone holds or waits for one, see semName), else the lock file in
// either mode. Waiters are counted by their OFD locks in /proc/locks: a
// lock's on its turnstile, a semaphore's on its limit file (less the
// holders). Readers are counted in
// /proc/locks, which leaves out holders in another PID namespace (Holders
// is then 0, unknown). The token is the newest holder's: the lock file's
// count (readers write theirs in grant order), or the highest of the held
// permit files'; 0 if a holder has not written one (or the file holds
// stray text).
//
// The tries are LOCK_SH|LOCK_NB (and LOCK_EX|LOCK_NB on a lock that only
// readers may hold), dropped at once: a TryLock or TryAcquire made at that
// very moment can fail.
func (d *fileDriver) Status(ctx context.Context, name string) (driver.Status, error) {
	st := driver.Status{Waiters: -1}
	if err := d.begin(); err != nil {
		return st, err
	}
	defer d.calls.Done()
	st, _, err := d.status(fileName(name), new(procLocks))
	return st, err
}

// status is the Status of the lock file lockName. busy reports that
// someone holds or waits for it, which needs no /proc/locks: a flock on
// the lock file, an OFD lock on its turnstile (a waiter's mark) or on its
// semaphore's limit file (a holder's or waiter's claim). pl is
// /proc/locks, read once for every name it is given for.
func (d *fileDriver) status(lockName string, pl *procLocks) (st driver.Status, busy bool, err error) {
	st = driver.Status{Waiters: -1}
	lim, err := d.semaphoreLimit(lockName)
	if err != nil {
		return st, false, mayPass(err)
	}
	if lim != 0 {
		st, err := d.semaphoreStatus(lockName, lim, pl)
		return st, true, err // the limit file is claimed: someone holds or waits
	}
	if n, err := d.claims(turnName(lockName), pl); err == nil {
		st.Waiters = n // one mark per waiter, writer or reader
	}
	if st.Waiters != 0 {
		if busy, err = d.marked(lockName); err != nil {
			return st, false, mayPass(err)
		}
	}
	f, err := d.openAt(lockName, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return st, busy, nil
	}
	if err != nil {
		return st, busy, mayPass(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	switch err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); {
	case err == nil:
		// Free, or held by readers only.
		switch err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); {
		case err == nil:
			unix.Flock(fd, unix.LOCK_UN)
			return st, busy, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			unix.Flock(fd, unix.LOCK_UN)
			st.Held, st.Mode = true, driver.Shared
			st.Holders, _ = readers(f, pl) // 0 if /proc/locks cannot tell
		default:
			return st, busy, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
		}
	case errors.Is(err, unix.EWOULDBLOCK):
		st.Held, st.Mode, st.Holders = true, driver.Exclusive, 1
	default:
		return st, busy, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
	}
	if st.Token, _, err = readToken(f); err != nil {
		return st, true, fmt.Errorf("filelock: fencing token in %s: %w", f.Name(), err)
	}
	return st, true, nil
}

// marked reports whether anyone has an OFD lock on the turnstile of the
// lock file lockName: a waiting writer's mark or a waiting reader's.
func (d *fileDriver) marked(lockName string) (bool, error) {
	t, err := d.openAt(turnName(lockName), unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer t.Close()
	return ofdHeld(t, unix.F_WRLCK, writerByte, 2)
}

// semaphoreStatus counts the held permits of the semaphore with lock file
// name, whose limit file says lim (-1: unreadable, and so unknown).
func (d *fileDriver) semaphoreStatus(name string, lim int, pl *procLocks) (driver.Status, error) {
	st := driver.Status{Waiters: -1, Mode: driver.Exclusive, Limit: max(lim, 0)}
	for k := 1; k <= lim; k++ {
		f, err := d.openAt(permitName(name, k), unix.O_RDONLY)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return st, mayPass(err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		if err == nil {
			f.Close() // free
			continue
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return st, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
		}
		tok, _, err := readToken(f)
		f.Close()
		if err != nil {
			return st, fmt.Errorf("filelock: fencing token in %s: %w", f.Name(), err)
		}
		st.Held = true
		st.Holders++
		st.Token = max(st.Token, tok)
	}
	// Every holder and waiter has a read lock on the limit file: the ones
	// beyond the holders wait.
	if lim > 0 {
		if in, err := d.claims(semName(name), pl); err == nil && in >= st.Holders {
			st.Waiters = in - st.Holders
		}
	}
	return st, nil
}

// claims counts the OFD locks on the file name in the lock directory (a
// turnstile, a semaphore's limit file), in /proc/locks, which shows every
// OFD lock whatever the PID namespace. A missing file has none.
func (d *fileDriver) claims(name string, pl *procLocks) (int, error) {
	var st unix.Stat_t
	switch err := unix.Fstatat(int(d.dirf.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == unix.ENOENT:
		return 0, nil
	case err != nil:
		return 0, err
	}
	counts, err := pl.counts()
	if err != nil {
		return 0, err
	}
	return counts[lockKey("OFDLCK", "READ", uint64(st.Dev), st.Ino)] +
		counts[lockKey("OFDLCK", "WRITE", uint64(st.Dev), st.Ino)], nil
}

// readers counts the shared flock(2) locks on f in /proc/locks.
func readers(f *os.File, pl *procLocks) (int, error) {
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return 0, err
	}
	counts, err := pl.counts()
	if err != nil {
		return 0, err
	}
	return counts[lockKey("FLOCK", "READ", uint64(fst.Dev), fst.Ino)], nil
}

// procLocks is /proc/locks, read at the first need and kept for the call
// (a Status, or a List of many names), counted by lockKey.
type procLocks struct {
	n    map[string]int
	err  error
	read bool
}

func (pl *procLocks) counts() (map[string]int, error) {
	if !pl.read {
		var b []byte
		if b, pl.err = os.ReadFile("/proc/locks"); pl.err == nil {
			pl.n = lockCounts(b)
		}
		pl.read = true
	}
	return pl.n, pl.err
}

// lockCounts counts the locks in /proc/locks text b by lockKey. Waiting
// requests ("->") are left out.
//
//	1: FLOCK  ADVISORY  READ  5587 fe:00:9986054 0 EOF
func lockCounts(b []byte) map[string]int {
	n := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || string(f[1]) == "->" {
			continue
		}
		n[string(f[1])+" "+string(f[3])+" "+string(f[5])]++
	}
	return n
}

// lockKey is the key in lockCounts of the locks of kind (FLOCK, POSIX,
// OFDLCK) and type (READ, WRITE) on the inode ino of device dev.
func lockKey(kind, typ string, dev, ino uint64) string {
	return fmt.Sprintf("%s %s %02x:%02x:%d", kind, typ, unix.Major(dev), unix.Minor(dev), ino)
}
