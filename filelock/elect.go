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
// Every exclusive grant (a Mutex's, a writer's, a leader's) writes its
// token and value, "TOKEN\nVALUE", over the leader file's text, and marks
// the file as held: an open file description (OFD) write lock on the byte
// at liveByte, far past any text, which it keeps until it gives the lock up
// (it closes the leader file first) or dies. Text without the mark is a
// past holder's and means nobody. The text is written under an OFD write
// lock on the bytes before liveByte, taken together with the mark, and read
// under a read lock on them: a reader finds the token and the value of one
// holder, complete, and never a past holder's text beside a live mark. A
// reader looks for the mark with F_OFD_GETLK, which takes nothing. OFD locks
// are apart from flock(2), so none of this touches the lock itself; and the
// leader file keeps its inode (it is never renamed), so a grant costs no
// directory change.

// maxValue bounds a leader's value: the leader file is read whole by every
// observer at every change.
const maxValue = 1 << 20

// liveByte is the leader file's mark of a live holder.
const liveByte = 1 << 40

// valueName is the leader file of the lock file lockName. Escaped names
// hold no '.', so it is no lock's file.
func valueName(lockName string) string { return baseName(lockName) + ".leader" }

func checkValue(value string) error {
	if len(value) > maxValue {
		return driver.InvalidArgument("filelock: value", fmt.Sprintf("%d bytes", len(value)), fmt.Sprintf("at most %d bytes", maxValue))
	}
	return nil
}

// publishLocked writes value, with l's token, as the text of the leader
// file, and marks it held if it is not yet; l.mu is held, and l holds the
// lock exclusively. If the text cannot be written the leader file is let
// go (readers find nobody, never a half-written text) until the next
// SetValue.
func (l *fileLock) publishLocked(ctx context.Context, value string) error {
	d := l.d
	f, span := l.val, int64(liveByte) // the text; with the mark if new
	if f == nil {
		var err error
		if f, err = d.openAt(valueName(l.name), unix.O_RDWR|unix.O_CREAT); err != nil {
			return mayPass(err)
		}
		span++
	}
	// Readers hold the text's read lock only for a read, so it is waited
	// for. The mark can be held only by a holder whose lock file was
	// replaced, until it notices (at once if it watches: see check).
	if err := lockCtx(ctx, d.isClosed, func() error { return ofdLock(f, unix.F_WRLCK, 0, span) }); err != nil {
		if f != l.val {
			f.Close()
		}
		if ctx.Err() == nil && !errors.Is(err, driver.ErrClosed) {
			err = fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", f.Name(), err)
		}
		return err
	}
	l.val = f
	text := make([]byte, 0, 21+len(value))
	text = append(strconv.AppendUint(text, l.token, 10), '\n')
	text = append(text, value...)
	if _, err := f.WriteAt(text, 0); err != nil {
		l.unpublishLocked()
		return mayPass(fmt.Errorf("filelock: write %s: %w", f.Name(), err))
	}
	if err := f.Truncate(int64(len(text))); err != nil { // never to 0: ext4 would flush it at close
		l.unpublishLocked()
		return mayPass(fmt.Errorf("filelock: truncate %s: %w", f.Name(), err))
	}
	if err := ofdLock(f, unix.F_UNLCK, 0, liveByte); err != nil {
		l.unpublishLocked()
		return fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", f.Name(), err)
	}
	return nil
}

// unpublishLocked closes the leader file, which drops its mark: readers
// find nobody. l.mu is held.
func (l *fileLock) unpublishLocked() {
	if l.val != nil {
		l.val.Close()
		l.val = nil
	}
}

// SetValue replaces the value kept with the lock, if l still holds it (its
// file is still the lock's); otherwise it returns an error matching
// driver.ErrLockLost and changes nothing.
func (l *fileLock) SetValue(ctx context.Context, value string) error {
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
	if l.val != nil {
		if at, err := l.d.fileAt(l.val, valueName(l.name)); err != nil || !at {
			l.unpublishLocked() // removed or replaced: write the one readers find
		}
	}
	return l.publishLocked(ctx, value)
}

// Holder returns the exclusive holder of name, as its leader file says: the
// zero Holder if nobody holds it exclusively (or the directory was moved or
// removed since the driver opened it).
func (d *fileDriver) Holder(ctx context.Context, name string) (driver.Holder, error) {
	if err := d.begin(); err != nil {
		return driver.Holder{}, err
	}
	defer d.calls.Done()
	f, err := d.openValue(valueName(fileName(name)))
	if err != nil || f == nil {
		return driver.Holder{}, err
	}
	defer f.Close()
	return d.readHolder(ctx, f)
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

// readHolder reads the leader file f: the zero Holder if it is not marked
// held.
func (d *fileDriver) readHolder(ctx context.Context, f *os.File) (driver.Holder, error) {
	if held, err := ofdHeld(f, unix.F_RDLCK, liveByte, 1); err != nil || !held {
		return driver.Holder{}, err
	}
	// A holder writes its text before it lets the text's lock go, and a
	// new holder takes that lock with its mark: what we read is the text
	// of the holder we saw, or of a later one.
	if err := lockCtx(ctx, d.isClosed, func() error { return ofdLock(f, unix.F_RDLCK, 0, liveByte) }); err != nil {
		if ctx.Err() == nil && !errors.Is(err, driver.ErrClosed) {
			err = fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", f.Name(), err)
		}
		return driver.Holder{}, err
	}
	b, err := io.ReadAll(io.NewSectionReader(f, 0, maxValue+22))
	ofdLock(f, unix.F_UNLCK, 0, liveByte)
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
