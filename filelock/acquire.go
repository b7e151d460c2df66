package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

func (d *fileDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	if err := d.begin(); err != nil {
		return nil, driver.Validity{}, err
	}
	defer d.calls.Done()
	switch {
	case req.Mode != driver.Exclusive && req.Mode != driver.Shared:
		return nil, driver.Validity{}, fmt.Errorf("%w: filelock: lock mode %v", driver.ErrNotSupported, req.Mode)
	case req.Value != "" && (req.Mode != driver.Exclusive || req.Limit != 0):
		return nil, driver.Validity{}, driver.InvalidArgument("filelock: value", "non-empty",
			"no value with a shared lock or a permit (a value is an exclusive holder's)")
	case len(req.Value) > maxValue:
		return nil, driver.Validity{}, checkValue(req.Value)
	case req.Limit < 0:
		return nil, driver.Validity{}, driver.InvalidArgument("filelock: limit", req.Limit, "a number of permits >= 1, or 0 for a lock")
	case req.Limit > maxPermits:
		return nil, driver.Validity{}, driver.InvalidArgument("filelock: semaphore limit", req.Limit,
			fmt.Sprintf("at most %d: each permit is a file, and a waiter keeps each open and watched", maxPermits))
	case req.Limit > 0 && req.Mode != driver.Exclusive:
		return nil, driver.Validity{}, driver.InvalidArgument("filelock: mode of a semaphore's permit", req.Mode, "exclusive")
	case req.Limit > 0:
		return d.acquirePermit(ctx, req)
	}
	return d.acquireLock(ctx, req)
}

// acquireLock takes the lock file of req.Name: LOCK_EX for a writer (or a
// Mutex), LOCK_SH for a reader, who first waits for no writer to be
// waiting (see turnName).
func (d *fileDriver) acquireLock(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	name := fileName(req.Name)
	shared := req.Mode == driver.Shared
	how := unix.LOCK_EX
	if shared {
		how = unix.LOCK_SH
	}
	var (
		f       *os.File // the lock file
		fid     fileID   // f's
		val     *os.File // f's leader file, unmarked, if kept open with f (cache.go)
		t       *os.File // the turnstile: what a reader looks at, and where a waiter marks
		marked  *os.File // the t that holds our mark, once waiting
		w       *waiter  // once waiting
		watched *os.File // the file w watches: f, or a reader's t
		unwatch func()
	)
	defer func() {
		if unwatch != nil {
			unwatch()
		}
		if f != nil {
			f.Close()
		}
		if t != nil {
			t.Close() // a writer's mark goes: readers behind it wake
		}
		if val != nil {
			val.Close()
		}
	}()
	if c, ok := d.takeCached(name); ok {
		// Checked as a fresh file is, once locked: see grant.
		f, fid, val = c.f, c.id, c.val
	}
	for {
		if f == nil {
			var err error
			if f, fid, err = d.openAtID(name, unix.O_RDWR|unix.O_CREAT); err != nil {
				return nil, driver.Validity{}, mayPass(err)
			}
			if val != nil {
				val.Close() // the leader file of a lock file no longer the lock's
				val = nil
			}
		}
		var on *os.File // what to wait for
		if shared {
			waits, nt, err := d.writerWaits(name, t)
			if t = nt; err != nil {
				return nil, driver.Validity{}, mayPass(err)
			}
			if waits {
				on = t
			}
		}
		if on == nil {
			since := time.Now()
			switch err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); {
			case err == nil:
				// A semaphore of the name has to be refused. Looked at
				// after the flock: see semName.
				if lim, err := d.semaphoreLimit(name); err != nil || lim != 0 {
					unix.Flock(int(f.Fd()), unix.LOCK_UN)
					if err != nil {
						return nil, driver.Validity{}, mayPass(err)
					}
					return nil, driver.Validity{}, lockOfSemaphore(lim)
				}
				l, err := d.grant(ctx, f, fid, name, shared, nil)
				if err != nil {
					return nil, driver.Validity{}, mayPass(err)
				}
				if l == nil {
					// Removed or replaced since our open: the file at the
					// name is the lock now.
					f.Close()
					f = nil
					continue
				}
				f = nil
				l.mu.Lock()
				l.val, val = val, nil
				l.mu.Unlock()
				if !shared {
					// Held: its token and value for everyone to read.
					l.mu.Lock()
					l.exclusive = true
					err = l.publishLocked(req.Value)
					l.mu.Unlock()
					if err != nil {
						l.Release(ctx) // unlocked and closed whatever it returns
						return nil, driver.Validity{}, err
					}
				}
				return l, driver.Validity{Since: since, TTL: req.TTL}, nil
			case errors.Is(err, unix.EWOULDBLOCK):
			default:
				return nil, driver.Validity{}, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
			}
			on = f
		}
		if !req.Wait {
			return nil, driver.Validity{}, driver.ErrNotAcquired
		}
		if marked == nil || marked != t {
			// A writer: from here on, readers who come wait behind us. A
			// reader: counted as waiting (see turnName).
			var err error
			if t, err = d.markWaiting(name, t, !shared); err != nil {
				return nil, driver.Validity{}, mayPass(err)
			}
			marked = t
		}
		if watched != on {
			// Watch first, then try once more: what we wait for may have
			// happened between the attempt and the watch.
			if unwatch != nil {
				unwatch()
			}
			if w == nil {
				w = newWaiter()
			}
			var err error
			if unwatch, err = d.ino.watchFile(on, w.sub); err != nil {
				unwatch = nil
				return nil, driver.Validity{}, waitErr(on.Name(), err)
			}
			watched = on
			continue
		}
		if err := w.wait(ctx); err != nil {
			return nil, driver.Validity{}, err
		}
		if err := d.ino.stopped(); err != nil {
			return nil, driver.Validity{}, err // closed, or inotify failed
		}
		if same, _ := d.idAt(fid, name); !same {
			f.Close()
			f = nil
		}
		if same, _ := d.fileAt(t, turnName(name)); !same {
			t.Close() // a mark on a file nobody sees: mark the new one
			t, marked = nil, nil
		}
	}
}

// lockOfSemaphore is the error of a lock asked for by the name of a
// semaphore in use, with limit lim (-1: unreadable).
func lockOfSemaphore(lim int) error {
	want := fmt.Sprintf("%d, the limit it is held or awaited with: it is a semaphore of %d permits now", lim, lim)
	if lim < 0 {
		want = "a semaphore's limit: it is a semaphore now, held or awaited (its limit file is unreadable)"
	}
	return driver.InvalidArgument("filelock: semaphore limit", "0 (a lock)", want)
}

// grant makes the lock on f, which we hold locked (LOCK_SH if shared),
// called name in the directory: its token, then the watch that ends the
// lease if the file is tampered with. The lock owns extra (a permit's
// limit file, or nil) from then on. It returns nil if f was not the lock's file when the watch was
// in place (a token is then spent for nothing, which is harmless: tokens
// may skip).
func (d *fileDriver) grant(ctx context.Context, f *os.File, id fileID, name string, shared bool, extra *os.File) (*fileLock, error) {
	token, err := d.grantToken(ctx, f, shared)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("filelock: fencing token for %s: %w", f.Name(), err)
	}
	l := &fileLock{d: d, f: f, id: id, name: name, token: token, extra: extra}
	l.mu.Lock()
	err = l.watch()
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// Held from here on, so that a directory event finds it; the checks
	// below then cover what happened before the watch.
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		l.abandon()
		return nil, driver.ErrClosed
	}
	d.open[l] = struct{}{}
	d.mu.Unlock()
	if same, err := d.sameID(id, name); err == nil && same {
		return l, nil
	}
	l.abandon()
	if same, err := d.dirAt(); err != nil || !same {
		if err == nil {
			err = fmt.Errorf("filelock: lock directory %s was moved or removed since it was opened: open it again", d.dir)
		}
		return nil, err
	}
	return nil, nil // f is no longer the file at the name
}

// abandon undoes grant's work on l, whose caller then closes the files.
func (l *fileLock) abandon() {
	l.mu.Lock()
	l.f, l.extra = nil, nil
	l.mu.Unlock()
	l.d.mu.Lock()
	delete(l.d.open, l)
	l.d.mu.Unlock()
}
