package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

type fileLock struct {
	d     *fileDriver
	name  string // file name in d's directory
	token uint64

	lost     chan struct{} // closed when the file stops being the lock's; nil if not watched
	lostOnce sync.Once

	mu sync.Mutex
	f  *os.File // nil once released
}

func (l *fileLock) Token() uint64 { return l.token }

// Lost is closed the moment the lock file is found removed, renamed or
// replaced, or its directory moved. It is nil if inotify could not watch
// the directory (see the package doc): Renew still notices.
func (l *fileLock) Lost() <-chan struct{} {
	if l.lost == nil {
		return nil
	}
	return l.lost
}

// watch makes l's loss known at once; l.mu is held. The driver's one watch
// on the directory serves all its holders. If the user's inotify limits
// refuse it, l goes without: Renew still checks.
//
// Lock order: fileLock.mu, then fileDriver.mu, then notifier.mu.
func (l *fileLock) watch() error {
	switch err := l.d.watchDir(); {
	case isLimit(err):
		return nil
	case errors.Is(err, driver.ErrClosed):
		return err
	case err != nil:
		return fmt.Errorf("filelock: cannot watch %s: %w", l.d.dir, err)
	}
	l.lost = make(chan struct{})
	return nil
}

// watchDir watches the lock directory once, for all holders.
func (d *fileDriver) watchDir() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watching {
		return nil
	}
	if _, err := d.ino.watchFile(d.dirf, &sub{mask: dirMask, fn: d.checkHeld}); err != nil {
		return err
	}
	d.watching = true // until Close stops the notifier
	return nil
}

// checkHeld checks the held locks whose file is called name (all of them
// for "").
func (d *fileDriver) checkHeld(name string) {
	d.mu.Lock()
	held := make([]*fileLock, 0, len(d.open))
	for l := range d.open {
		if name == "" || l.name == name {
			held = append(held, l)
		}
	}
	d.mu.Unlock()
	for _, l := range held {
		l.check()
	}
}

// check ends the lease if the file is no longer the lock's.
func (l *fileLock) check() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil || l.lost == nil {
		return
	}
	if same, err := l.d.sameFile(l.f, l.name); err == nil && !same {
		l.lostOnce.Do(func() { close(l.lost) })
	}
}

// Renew checks that the file we hold locked is still the lock's file.
func (l *fileLock) Renew(context.Context) (driver.Validity, error) {
	since := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return driver.Validity{}, driver.ErrLockLost
	}
	same, err := l.d.sameFile(l.f, l.name)
	if err != nil {
		return driver.Validity{}, fmt.Errorf("filelock: %w", err)
	}
	if !same {
		return driver.Validity{}, fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.f.Name())
	}
	return driver.Validity{Since: since, TTL: 24 * time.Hour}, nil
}

// Release unlocks and closes the file; closing it is what wakes waiters.
// Whatever it returns, the lock is free afterwards: close(2) frees the
// descriptor, and so the flock, even when it reports an error. Called again
// it returns ErrLockLost.
func (l *fileLock) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return driver.ErrLockLost
	}
	path := l.f.Name()
	var (
		same bool
		err  error
	)
	if l.lost != nil {
		// The watch covers the directory: a moved one has closed lost.
		same, err = l.d.fileAt(l.f, l.name)
		select {
		case <-l.lost:
			same = false
		default:
		}
	} else {
		same, err = l.d.sameFile(l.f, l.name)
	}
	cerr := l.closeLocked()
	l.d.mu.Lock()
	delete(l.d.open, l)
	l.d.mu.Unlock()
	if err == nil && !same {
		return fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, path)
	}
	if cerr != nil {
		return fmt.Errorf("filelock: close %s (the lock is free all the same): %w", path, cerr)
	}
	return nil
}

func (l *fileLock) closeLocked() error {
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	return err
}

// drop is Close's release: the lock is gone, and Lost says so.
func (l *fileLock) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	l.closeLocked()
	if l.lost != nil {
		l.lostOnce.Do(func() { close(l.lost) })
	}
}
