package filelock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// The value kept with an exclusive lock (Request.Value, an election's
// leader's) lives in the lock's leader file NAME.leader, never in the lock
// file: an observer has to tell whether the lock is held without taking
// the lock file's flock, since a probe there could make a waiter miss its
// wake-up (waiters wake on a close of the lock file, not on an unlock).
//
// Every exclusive grant (a Mutex's, a writer's, a leader's) publishes its
// token and value in one file: it writes "TOKEN\nVALUE" to a new file
// NAME.leader~TOKEN, flocks it LOCK_EX, and renames it over NAME.leader.
// A reader so finds the token and the value of one holder, complete, or the
// previous file. The holder keeps its leader file open and locked until it
// gives the lock up (it closes the leader file first) or dies: a leader
// file that nobody holds locked is a past holder's, and means nobody. A
// reader probes with LOCK_SH|LOCK_NB, which only leader files' holders
// and readers ever take, so no waiter can miss anything by it. SetValue
// writes a new file the same way, then closes the one it replaced.

// maxValue bounds a leader's value: the leader file is read whole by every
// observer at every change.
const maxValue = 1 << 20

// valueName is the leader file of the lock file lockName; valueTemp the
// file a holder with the token tok writes before renaming it there.
// Escaped names hold no '.', so neither is any lock's file.
func valueName(lockName string) string { return baseName(lockName) + ".leader" }
func valueTemp(lockName string, tok uint64) string {
	return baseName(lockName) + ".leader~" + strconv.FormatUint(tok, 10)
}

func checkValue(value string) error {
	if len(value) > maxValue {
		return driver.InvalidArgument("filelock: value", fmt.Sprintf("%d bytes", len(value)), fmt.Sprintf("at most %d bytes", maxValue))
	}
	return nil
}

// publishLocked makes value the lock's value, with its token, in a new
// leader file that replaces the current one; l.mu is held, and l holds the
// lock exclusively.
func (l *fileLock) publishLocked(value string) error {
	d := l.d
	tmp := valueTemp(l.name, l.token)
	f, err := d.openAt(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL)
	if errors.Is(err, unix.EEXIST) {
		// Left by an earlier attempt of ours that failed midway: tokens
		// are never granted twice, so it is nobody else's.
		unix.Unlinkat(int(d.dirf.Fd()), tmp, 0)
		f, err = d.openAt(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL)
	}
	if err != nil {
		return mayPass(err)
	}
	fail := func(err error) error {
		unix.Unlinkat(int(d.dirf.Fd()), tmp, 0)
		f.Close()
		return mayPass(err)
	}
	// Locked before it has the name: a reader never finds it free while
	// we hold.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(fmt.Errorf("filelock: flock %s: %w", f.Name(), err))
	}
	text := make([]byte, 0, 21+len(value))
	text = append(strconv.AppendUint(text, l.token, 10), '\n')
	text = append(text, value...)
	if _, err := f.Write(text); err != nil {
		return fail(fmt.Errorf("filelock: write %s: %w", f.Name(), err))
	}
	if err := unix.Renameat(int(d.dirf.Fd()), tmp, int(d.dirf.Fd()), valueName(l.name)); err != nil {
		return fail(fmt.Errorf("filelock: rename %s: %w", f.Name(), err))
	}
	if l.val != nil {
		l.val.Close() // replaced: no reader opens it any more
	}
	l.val = f
	return nil
}

// unpublishLocked closes the leader file: readers find nobody. l.mu is
// held.
func (l *fileLock) unpublishLocked() {
	if l.val != nil {
		l.val.Close()
		l.val = nil
	}
}

// SetValue replaces the value kept with the lock, if l still holds it (its
// file is still the lock's); otherwise it returns an error matching
// driver.ErrLockLost and changes nothing.
func (l *fileLock) SetValue(_ context.Context, value string) error {
	if err := checkValue(value); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return driver.ErrLockLost
	}
	if !l.exclusive {
		return fmt.Errorf("%w: filelock: a value kept with a shared lock or a permit", driver.ErrNotSupported)
	}
	if l.lost != nil {
		select {
		case <-l.lost:
			return fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.f.Name())
		default:
		}
	}
	same, err := l.d.sameFile(l.f, l.name)
	if err != nil {
		return fmt.Errorf("filelock: %w", err)
	}
	if !same {
		return fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.f.Name())
	}
	return l.publishLocked(value)
}

// Holder returns the exclusive holder of name, as its leader file says: the
// zero Holder if nobody holds it exclusively (or the directory was moved or
// removed since the driver opened it).
func (d *fileDriver) Holder(_ context.Context, name string) (driver.Holder, error) {
	if err := d.begin(); err != nil {
		return driver.Holder{}, err
	}
	defer d.calls.Done()
	f, err := d.openValue(valueName(fileName(name)))
	if err != nil || f == nil {
		return driver.Holder{}, err
	}
	defer f.Close()
	return readHolder(f)
}

// openValue opens the leader file vname for reading; nil if there is none.
func (d *fileDriver) openValue(vname string) (*os.File, error) {
	f, err := d.openAt(vname, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, mayPass(err)
	}
	return f, nil
}

// readHolder reads the leader file f: the zero Holder if its holder has
// let it go.
func readHolder(f *os.File) (driver.Holder, error) {
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); {
	case err == nil:
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return driver.Holder{}, nil
	case !errors.Is(err, unix.EWOULDBLOCK):
		return driver.Holder{}, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
	}
	// Written whole before it was renamed to its name, and never again.
	b, err := io.ReadAll(io.LimitReader(f, maxValue+22))
	if err != nil {
		return driver.Holder{}, mayPass(fmt.Errorf("filelock: read %s: %w", f.Name(), err))
	}
	for i, c := range b {
		if c == '\n' {
			tok, err := strconv.ParseUint(string(b[:i]), 10, 64)
			if err != nil || tok == 0 {
				break
			}
			return driver.Holder{Token: tok, Value: string(b[i+1:])}, nil
		}
	}
	return driver.Holder{}, fmt.Errorf("filelock: leader file %s holds no token (%d bytes): it was not written by dlock", f.Name(), len(b))
}
