package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// A semaphore of n permits is n permit files, NAME.permit1 to NAME.permitN:
// a permit is LOCK_EX on one of them, so the kernel frees a dead holder's
// permit at once. Its limit is kept in NAME.sem, which every holder and
// waiter keeps open with an open file description (OFD) read lock on it
// (fcntl F_OFD_SETLK) while it holds or waits: whoever finds no such lock
// (it gets the OFD write lock) writes its n there, and everyone else reads
// it and refuses another n. The OFD lock goes with the holder's last
// descriptor, at its death too, and a downgrade from write to read is
// atomic, so the limit cannot change while anyone holds or waits.
//
// A semaphore and a lock (Mutex, RWMutex) of one name refuse each other:
// a lock taker checks NAME.sem for OFD locks after it has its flock, and a
// semaphore taker checks the lock file (a LOCK_EX|LOCK_NB that it drops at
// once) and the turnstile after it has its OFD read lock. Each looks after
// it has made itself visible, so of two that come at once at least one
// sees the other.

// maxPermits bounds a semaphore's limit: a waiter keeps every permit file
// open (so that its tries close nothing, which would wake the other
// waiters) and watched.
const maxPermits = 1024

func baseName(lockName string) string { return strings.TrimSuffix(lockName, ".lock") }

// semName is the limit file of the semaphore whose lock file name would be
// lockName; permitName is its permit file k (1-based). Escaped names hold
// no '.', so neither is any lock's file.
func semName(lockName string) string { return baseName(lockName) + ".sem" }
func permitName(lockName string, k int) string {
	return baseName(lockName) + ".permit" + strconv.Itoa(k)
}

// acquirePermit takes one of req.Limit permits of req.Name.
func (d *fileDriver) acquirePermit(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	name, n := fileName(req.Name), req.Limit
	s, err := d.joinSemaphore(ctx, name, n)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	permits := make([]*os.File, n)
	unwatch := make([]func(), n)
	var w *waiter // once waiting
	defer func() {
		for k := range n {
			if unwatch[k] != nil {
				unwatch[k]()
			}
			if permits[k] != nil {
				permits[k].Close()
			}
		}
		if s != nil {
			s.Close()
		}
	}()
	if lock, err := d.heldAsLock(name); err != nil {
		return nil, driver.Validity{}, mayPass(err)
	} else if lock {
		return nil, driver.Validity{}, driver.InvalidArgument("filelock: semaphore limit", n,
			"0, the limit it is held or awaited with: it is a lock (Mutex or RWMutex) now")
	}
	for {
		for k := range n {
			pn := permitName(name, k+1)
			if permits[k] == nil {
				f, err := d.openAt(pn, unix.O_RDWR|unix.O_CREAT)
				if err != nil {
					return nil, driver.Validity{}, mayPass(err)
				}
				permits[k] = f
				if w != nil {
					if unwatch[k] != nil {
						unwatch[k]()
					}
					if unwatch[k], err = d.ino.watchFile(f, w.sub); err != nil {
						unwatch[k] = nil
						return nil, driver.Validity{}, waitErr(f.Name(), err)
					}
				}
			}
			f := permits[k]
			since := time.Now()
			switch err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); {
			case err == nil:
				id, err := statID(f)
				if err != nil {
					return nil, driver.Validity{}, fmt.Errorf("filelock: fstat %s: %w", f.Name(), err)
				}
				l, err := d.grant(ctx, f, id, pn, false, s)
				if err != nil {
					return nil, driver.Validity{}, mayPass(err)
				}
				if l == nil {
					// Removed or replaced since our open: unlock it, and
					// try the file at the name on the next round.
					f.Close()
					permits[k] = nil
					continue
				}
				permits[k], s = nil, nil // l's now
				return l, driver.Validity{Since: since, TTL: req.TTL}, nil
			case errors.Is(err, unix.EWOULDBLOCK):
			default:
				return nil, driver.Validity{}, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
			}
		}
		if !req.Wait {
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
		if w == nil {
			// Watch every permit file, then try once more: a permit may
			// have come back between the attempts and the watches.
			w = newWaiter()
			for k, f := range permits {
				if f == nil {
					continue // opened, and watched, on the next round
				}
				if unwatch[k], err = d.ino.watchFile(f, w.sub); err != nil {
					unwatch[k] = nil
					return nil, driver.Validity{}, waitErr(f.Name(), err)
				}
			}
			continue
		}
		if err := w.wait(ctx); err != nil {
			return nil, driver.Validity{}, err
		}
		if err := d.ino.stopped(); err != nil {
			return nil, driver.Validity{}, err // closed, or inotify failed
		}
		for k, f := range permits {
			if f == nil {
				continue
			}
			if same, _ := d.fileAt(f, permitName(name, k+1)); !same {
				f.Close()
				permits[k] = nil
			}
		}
	}
}

// joinSemaphore opens the limit file of the semaphore with lock file name
// name, and holds it with an OFD read lock under limit n: it writes n
// there if nobody else holds or waits, and refuses another limit.
func (d *fileDriver) joinSemaphore(ctx context.Context, name string, n int) (*os.File, error) {
	for {
		s, err := d.openAt(semName(name), unix.O_RDWR|unix.O_CREAT)
		if err != nil {
			return nil, mayPass(err)
		}
		err = d.joinLimit(ctx, s, n)
		if err == nil {
			// Replaced since our open: the file at the name is the one
			// others find.
			var same bool
			if same, err = d.fileAt(s, semName(name)); err == nil && !same {
				s.Close()
				continue
			}
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}
}

// joinLimit takes an OFD read lock on the limit file s with limit n.
func (d *fileDriver) joinLimit(ctx context.Context, s *os.File, n int) error {
	lim := 0 // 0: we hold the write lock; -1: stray text
	// The write lock is held only to write the limit: wait a moment for it.
	err := lockCtx(ctx, d.isClosed, func() error {
		switch err := ofdLock(s, unix.F_WRLCK, 0, 0); {
		case err == nil:
			lim = 0 // nobody else holds or waits: ours to set
			return nil
		case !errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", s.Name(), err)
		}
		if err := ofdLock(s, unix.F_RDLCK, 0, 0); err != nil {
			return err // EAGAIN: someone writes the limit now
		}
		var err error
		if lim, err = readLimit(s); errors.Is(err, errStray) {
			lim, err = -1, nil
		}
		return err
	})
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			err = fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", s.Name(), err)
		}
		return mayPass(err)
	}
	if lim == n {
		return nil
	}
	// Another limit (or stray text) left by holders who may all have gone:
	// ours to set if we are alone.
	if lim != 0 && ofdLock(s, unix.F_WRLCK, 0, 0) != nil {
		if lim < 0 {
			return fmt.Errorf("filelock: semaphore limit in %s is not a number of permits, "+
				"and it is held or awaited: not by dlock", s.Name())
		}
		return driver.InvalidArgument("filelock: semaphore limit", n,
			fmt.Sprintf("%d, the limit it is held or awaited with", lim))
	}
	_, size, err := readHead(s)
	if err == nil {
		err = writeText(s, []byte(strconv.Itoa(n)+"\n"), size)
	}
	if err == nil {
		err = ofdLock(s, unix.F_RDLCK, 0, 0) // atomic: nobody gets in between
	}
	if err != nil {
		return mayPass(fmt.Errorf("filelock: semaphore limit in %s: %w", s.Name(), err))
	}
	return nil
}

var errStray = errors.New("not a number of permits")

// readLimit reads the limit a semaphore's limit file holds; other text is
// errStray.
func readLimit(s *os.File) (int, error) {
	b, _, err := readHead(s)
	if err != nil {
		return 0, fmt.Errorf("filelock: semaphore limit in %s: %w", s.Name(), err)
	}
	lim, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || lim < 1 {
		return 0, errStray
	}
	return lim, nil
}

// semaphoreLimit returns the limit of the semaphore whose lock file would
// be name if anyone holds or waits for one of its permits, else 0.
func (d *fileDriver) semaphoreLimit(name string) (int, error) {
	sn := semName(name)
	var st unix.Stat_t
	if unix.Fstatat(int(d.dirf.Fd()), sn, &st, unix.AT_SYMLINK_NOFOLLOW) == unix.ENOENT {
		return 0, nil // never used as a semaphore: the lock path's usual case, made cheap
	}
	s, err := d.openAt(sn, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer s.Close()
	held, err := ofdHeld(s, unix.F_WRLCK, 0, 0)
	if err != nil || !held {
		return 0, err
	}
	lim, err := readLimit(s)
	if errors.Is(err, errStray) {
		return -1, nil // held all the same: not free for a lock
	}
	return lim, err
}

// heldAsLock reports whether the lock file name is held (LOCK_EX|LOCK_NB
// fails; it is dropped at once if not) or anyone waits for it.
func (d *fileDriver) heldAsLock(name string) (bool, error) {
	f, err := d.openAt(name, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return false, nil // never used as a lock
	}
	if err != nil {
		return false, err
	}
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); {
	case err == nil:
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return true, nil
	default:
		f.Close()
		return false, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
	}
	f.Close()
	t, err := d.openAt(turnName(name), unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return false, nil // nobody ever waited
	}
	if err != nil {
		return false, err
	}
	defer t.Close()
	return ofdHeld(t, unix.F_WRLCK, writerByte, 2) // a writer or a reader waits
}
