package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// watcher wakes a waiter when something happens to a lock file: a holder
// closing it (the release or death of a holder) or the file being removed or
// replaced. Spurious wake-ups (another waiter giving up) only cost a retry.
type watcher struct {
	path string
	f    *os.File // the inotify instance, in Go's poller
	wd   int
}

// IN_CLOSE_NOWRITE too, for holders that lock a read-only file (flock(1)).
// Waiters keep their file open while they wait, so their own opens and
// closes do not make waiters wake each other in turn.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

func newWatcher(path string) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("filelock: inotify: %w", err)
	}
	return &watcher{path: path, f: os.NewFile(uintptr(fd), "inotify"), wd: -1}, nil
}

// watch (re)attaches the watch to the file now at path, creating it if need be.
func (w *watcher) watch() error {
	f, err := os.OpenFile(w.path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("filelock: %w", err)
	}
	f.Close()
	if w.wd >= 0 {
		unix.InotifyRmWatch(int(w.f.Fd()), uint32(w.wd))
	}
	wd, err := unix.InotifyAddWatch(int(w.f.Fd()), w.path, watchMask)
	if err != nil {
		return fmt.Errorf("filelock: inotify watch %s: %w", w.path, err)
	}
	w.wd = wd
	return nil
}

// wait blocks until an event arrives or ctx is done.
func (w *watcher) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	_, err := w.f.Read(buf)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ctx.Err()
		}
		return fmt.Errorf("filelock: inotify read: %w", err)
	}
	return nil
}

func (w *watcher) close() { w.f.Close() }
