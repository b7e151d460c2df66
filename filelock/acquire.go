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
	name := fileName(req.Name)
	var (
		f       *os.File
		w       *waiter // once waiting
		unwatch func()
	)
	defer func() {
		if f != nil {
			f.Close()
		}
		if unwatch != nil {
			unwatch()
		}
	}()
	for {
		if f == nil {
			var err error
			if f, err = d.openAt(name, unix.O_RDWR|unix.O_CREAT); err != nil {
				return nil, driver.Validity{}, mayPass(err)
			}
			if unwatch != nil { // a new file: watch it instead
				unwatch()
				if unwatch, err = d.ino.watchFile(f, w.sub); err != nil {
					unwatch = nil
					return nil, driver.Validity{}, waitErr(f.Name(), err)
				}
			}
		}
		since := time.Now()
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			l, err := d.grant(ctx, f, name)
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
			return l, driver.Validity{Since: since, TTL: req.TTL}, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			if !req.Wait {
				return nil, driver.Validity{}, driver.ErrNotAcquired
			}
		default:
			return nil, driver.Validity{}, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
		}
		if unwatch == nil {
			// Start watching only when we must wait, then try once more:
			// the holder may have gone between the attempt and the watch.
			w = newWaiter()
			if unwatch, err = d.ino.watchFile(f, w.sub); err != nil {
				unwatch = nil
				return nil, driver.Validity{}, waitErr(f.Name(), err)
			}
			continue
		}
		if err := w.wait(ctx); err != nil {
			return nil, driver.Validity{}, err
		}
		if err := d.ino.stopped(); err != nil {
			return nil, driver.Validity{}, err // closed, or inotify failed
		}
		if same, _ := d.fileAt(f, name); !same {
			f.Close()
			f = nil
		}
	}
}

// grant makes the lock on f, which we hold locked: its token, then the
// watch that ends the lease if the file is tampered with. It returns nil if
// f was not the lock's file when the watch was in place (a token is then
// spent for nothing, which is harmless: tokens may skip).
func (d *fileDriver) grant(ctx context.Context, f *os.File, name string) (*fileLock, error) {
	token, err := d.grantToken(ctx, f)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("filelock: fencing token for %s: %w", f.Name(), err)
	}
	l := &fileLock{d: d, f: f, name: name, token: token}
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
	if same, err := d.dirAt(); err != nil || !same {
		l.abandon()
		if err == nil {
			err = fmt.Errorf("filelock: lock directory %s was moved or removed since it was opened: open it again", d.dir)
		}
		return nil, err
	}
	if same, err := d.fileAt(f, name); err != nil || !same {
		l.abandon()
		return nil, nil
	}
	return l, nil
}

// abandon undoes grant's work on l, whose caller then closes the file.
func (l *fileLock) abandon() {
	l.mu.Lock()
	l.f = nil
	l.mu.Unlock()
	l.d.mu.Lock()
	delete(l.d.open, l)
	l.d.mu.Unlock()
}
