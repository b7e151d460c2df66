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
// an open file description (OFD) read lock on its byte 0 (fcntl
// F_OFD_SETLK), which any number of waiting writers hold at once without
// contending. A reader looks before it takes its LOCK_SH: F_OFD_GETLK with
// a write lock over byte 0 reports any mark without taking anything, so
// readers never get in a writer's way. While a mark is there the reader
// waits for a close of the turnstile file (a writer done waiting, or dead:
// the kernel drops an OFD lock with its last descriptor), then looks again.
//
// A reader that waits (for a mark to go, or for a writer that holds) holds
// a read lock on byte 1 meanwhile, which nobody looks at but Status: one
// OFD lock on the turnstile per waiter, writer or reader, is how waiters
// are counted (in /proc/locks).
//
// A reader that looked just before a writer marked may still take its
// LOCK_SH after it (the look and the flock are two system calls); every
// reader that looks later waits. OFD locks and flock locks are separate on
// Linux, so the marks never touch the lock itself.

// The turnstile's bytes: a waiting writer's mark, a waiting reader's.
const (
	writerByte = 0
	readerByte = 1
)

// turnName is the turnstile file of the lock file lockName ("x.lock" ->
// "x.writer"). Escaped names hold no '.', so it is no lock's file.
func turnName(lockName string) string {
	return lockName[:len(lockName)-len(".lock")] + ".writer"
}

// ofdLock sets (typ F_RDLCK, F_WRLCK, F_UNLCK) an OFD lock over n bytes of f
// from start (n = 0: to the end, and beyond), without waiting. A conflict
// is EAGAIN.
func ofdLock(f *os.File, typ int16, start, n int64) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: n}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EACCES) {
		err = unix.EAGAIN
	}
	return err
}

// ofdHeld reports whether anyone holds an OFD lock on n bytes of f from
// start that conflicts with typ (F_WRLCK: any lock at all), without taking
// one.
func ofdHeld(f *os.File, typ int16, start, n int64) (bool, error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: n}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false, fmt.Errorf("filelock: fcntl F_OFD_GETLK %s: %w", f.Name(), err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

// markWaiting opens the turnstile of the lock file name (t, if already
// open) and marks that a writer (or a reader) waits. Closing the returned
// file takes the mark away.
func (d *fileDriver) markWaiting(name string, t *os.File, writer bool) (*os.File, error) {
	if t == nil {
		var err error
		if t, err = d.openAt(turnName(name), unix.O_RDWR|unix.O_CREAT); err != nil {
			return nil, err
		}
	}
	at := int64(readerByte)
	if writer {
		at = writerByte
	}
	if err := ofdLock(t, unix.F_RDLCK, at, 1); err != nil {
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
// if there is no turnstile file. A reader's mark on the t it is given goes
// if t is no longer the turnstile.
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
	held, err := ofdHeld(t, unix.F_WRLCK, writerByte, 1)
	if err != nil {
		t.Close()
		return false, nil, err
	}
	return held, t, nil
}
