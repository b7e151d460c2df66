package filelock

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The turnstile keeps readers behind a waiting writer. flock(2) itself lets
// a new LOCK_SH in whenever only readers hold, however long a LOCK_EX has
// waited, so a stream of overlapping readers would starve a writer. A
// writer (any Exclusive request, a Mutex too) that has to wait therefore
// marks NAME.writer, the lock's turnstile file, until it returns: it holds
// an open file description (OFD) read lock on it (fcntl F_OFD_SETLK), which
// any number of waiting writers hold at once without contending. A reader
// looks before it takes its LOCK_SH: F_OFD_GETLK with a write lock reports
// any mark without taking anything, so readers never get in a writer's
// way. While a mark is there the reader waits for a close of the
// turnstile file (a writer done waiting, or dead: the kernel drops an OFD
// lock with its last descriptor), then looks again.
//
// A reader that looked just before a writer marked may still take its
// LOCK_SH after it (the look and the flock are two system calls); every
// reader that looks later waits. OFD locks and flock locks are separate on
// Linux, so the marks never touch the lock itself.

// turnName is the turnstile file of the lock file lockName ("x.lock" ->
// "x.writer"). Escaped names hold no '.', so it is no lock's file.
func turnName(lockName string) string {
	return lockName[:len(lockName)-len(".lock")] + ".writer"
}

// ofdLock sets (typ F_RDLCK, F_WRLCK, F_UNLCK) an OFD lock over all of f,
// without waiting. A conflict is EAGAIN.
func ofdLock(f *os.File, typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EACCES) {
		err = unix.EAGAIN
	}
	return err
}

// ofdHeld reports whether anyone holds an OFD lock on f that conflicts
// with typ (F_WRLCK: any lock at all), without taking one.
func ofdHeld(f *os.File, typ int16) (bool, error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false, fmt.Errorf("filelock: fcntl F_OFD_GETLK %s: %w", f.Name(), err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

// markWriter opens the turnstile of the lock file name and marks it: a
// writer waits. Closing the returned file takes the mark away.
func (d *fileDriver) markWriter(name string) (*os.File, error) {
	t, err := d.openAt(turnName(name), unix.O_RDWR|unix.O_CREAT)
	if err != nil {
		return nil, err
	}
	if err := ofdLock(t, unix.F_RDLCK); err != nil {
		t.Close()
		// Nobody takes a write lock on a turnstile: a conflict means a
		// stranger is using the file.
		return nil, fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", t.Name(), err)
	}
	return t, nil
}

// writerWaits reports whether a writer has marked the turnstile of the
// lock file name. t is the turnstile file if already open (nil if not); the
// returned file is the one to keep (and to watch while a writer waits), nil
// if there is no turnstile file.
func (d *fileDriver) writerWaits(name string, t *os.File) (bool, *os.File, error) {
	if t != nil {
		if same, err := d.fileAt(t, turnName(name)); err != nil || !same {
			t.Close()
			t = nil
		}
	}
	if t == nil {
		var err error
		t, err = d.openAt(turnName(name), unix.O_RDONLY)
		if errors.Is(err, unix.ENOENT) {
			return false, nil, nil // no writer ever waited
		}
		if err != nil {
			return false, nil, err
		}
	}
	held, err := ofdHeld(t, unix.F_WRLCK)
	if err != nil {
		t.Close()
		return false, nil, err
	}
	return held, t, nil
}
