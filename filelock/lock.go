package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// fileLock is a held lock: the lock file, open and flocked.
type fileLock struct {
	d     *fileDriver
	name  string // file name in d's directory
	id    fileID // the lock file's
	token uint64

	lost     chan struct{} // closed when the file stops being the lock's; nil if not watched
	lostOnce sync.Once
	onLost   func() // the portable layer's call on loss (driver.LossNotifier); mu

	exclusive bool // a lock's LOCK_EX, which publishes its value (see valueName)

	mu       sync.Mutex
	f        *os.File // nil once released
	extra    *os.File // a permit's semaphore limit file, closed after f
	val      *os.File // the leader file, if open; let go before f
	marked   bool     // val holds our mark (an exclusive lock's)
	valFirst byte     // the first byte of the text we wrote to val
	handed   bool     // f was handed out (File): it is closed at the end, never kept
}

// HeldFile returns the open file that carries the flock(2) of l, a lease of
// this driver, and true; nil and false if l is another driver's lease, or
// has ended.
//
// The file belongs to the driver: do not close it, unlock it or write to it,
// and do not use it once the lease has ended (Unlock closes it: a lease
// whose file was handed out never keeps it open for the name's next grant,
// as the package doc's "Files" says others do). It is there
// to share the lock with another process: a flock belongs to the open file,
// not to a descriptor or a process, so a copy of the descriptor (dup(2), a
// child's copy through os/exec's Cmd.ExtraFiles) keeps the lock held until
// every copy is closed, even after this process has died. `dlock run` gives
// one to a helper process that kills the command should dlock be killed,
// so that the lock is not free before the command is gone. Unlock still
// frees the lock at once, for every copy: it unlocks the file before closing
// it.
//
// A reader's file carries LOCK_SH, a semaphore permit's is its permit file.
// A copy of a permit file keeps the permit, but not the claim on the
// semaphore's limit (see the package doc), which ends with this process:
// while only a copy holds the permit, a request with another limit is not
// refused.
//
// HeldFile calls the method File() *os.File of the lease's driver lock
// (Lease.Driver), which returns the file, or nil once the lock is released.
func HeldFile(l *dlock.Lease) (*os.File, bool) {
	if l == nil {
		return nil, false
	}
	select {
	case <-l.Done():
		return nil, false
	default:
	}
	fl, ok := l.Driver().(*fileLock)
	if !ok {
		return nil, false
	}
	f := fl.File()
	return f, f != nil
}

// File returns the open file that carries the lock's flock, or nil once the
// lock is released: see HeldFile.
func (l *fileLock) File() *os.File {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A copy of the descriptor may outlive the lease: the file must not
	// be kept for another grant, which the copy would then hold too.
	l.handed = true
	return l.f
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

// dirWatched reports whether the directory's watch is on: whether every
// removal or rename in it is told to checkHeld.
func (d *fileDriver) dirWatched() bool {
	d.mu.Lock()
	watching := d.watching
	d.mu.Unlock()
	return watching && d.ino.stopped() == nil
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
	// A file removed or renamed in the directory (which dlock never does)
	// may be one kept open, or the tokens file: none is kept from then on,
	// and the tokens file is looked up at its next use.
	d.dirEvents.Add(1)
	d.dropCached()
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

// NotifyLost implements driver.LossNotifier: a held lock costs the
// portable layer no goroutine.
func (l *fileLock) NotifyLost(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		return // not watched: Renew notices
	}
	select {
	case <-l.lost:
		f()
	default:
		l.onLost = f
	}
}

// markLostLocked closes Lost and tells the portable layer, once; mu held.
func (l *fileLock) markLostLocked() {
	l.lostOnce.Do(func() {
		close(l.lost)
		if l.onLost != nil {
			l.onLost()
		}
	})
}

// check ends the lease if the file is no longer the lock's.
func (l *fileLock) check() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil || l.lost == nil {
		return
	}
	if same, err := l.d.sameID(l.id, l.name); err == nil && !same {
		l.unpublishLocked() // readers of the value find nobody
		l.markLostLocked()
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
	same, err := l.d.sameID(l.id, l.name)
	if err != nil {
		return driver.Validity{}, fmt.Errorf("filelock: %w", err)
	}
	if !same {
		l.unpublishLocked()
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
		same, err = l.d.idAt(l.id, l.name)
		select {
		case <-l.lost:
			same = false
		default:
		}
	} else {
		same, err = l.d.sameID(l.id, l.name)
	}
	// A file that is still the lock's is kept open for the next grant of
	// the name (see cache.go), unless it went out of our hands.
	cerr := l.closeLocked(err == nil && same && !l.handed && l.extra == nil)
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

// closeLocked unlocks the lock and closes its files, or keeps them open
// for the name's next grant (keep; see cache.go).
func (l *fileLock) closeLocked(keep bool) error {
	if keep {
		if l.keepLocked() {
			return nil
		}
		// What could not be kept is closed below.
	}
	l.unpublishLocked() // first: a reader of the value never finds a free lock's holder
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	err := l.f.Close()
	l.f = nil
	if l.extra != nil {
		l.extra.Close() // only a read of it was locked
		l.extra = nil
	}
	return err
}

// drop is Close's release: the lock is gone, and Lost says so.
func (l *fileLock) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	l.closeLocked(false)
	if l.lost != nil {
		l.markLostLocked()
	}
}

// keepLocked lets the lock go as closeLocked does, but keeps its files
// open in the driver's cache, waking waiters and observers as their close
// would (see cache.go). It reports false, having kept nothing, if the lock
// file cannot be unlocked or its waiters woken: closeLocked then closes.
func (l *fileLock) keepLocked() bool {
	if !l.unmarkLocked() {
		l.unpublishLocked()
	}
	if err := unix.Flock(int(l.f.Fd()), unix.LOCK_UN); err != nil {
		return false
	}
	if err := wakeWaiters(l.f); err != nil {
		return false
	}
	l.d.putCached(l.name, cachedFiles{f: l.f, id: l.id, val: l.val})
	l.f, l.val = nil, nil
	return true
}
