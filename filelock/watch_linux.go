package filelock

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// notifier delivers inotify events: on lock files to waiters (a holder
// closing the file, by its release or its death, or touching it after its
// unlock when it keeps it open (cache.go); the file removed or
// replaced), and on the lock directory to holders (an entry removed or
// renamed, by name; the directory moved). One inotify instance serves all of
// a driver's watches, read by one goroutine from first use until Close:
// closing an inotify instance costs the kernel an RCU grace period (~10-20 ms
// here), too much to pay per wait. Spurious wake-ups cost one retry.
type notifier struct {
	mu    sync.Mutex
	f     *os.File                    // the inotify instance, in Go's poller; nil until first use
	subs  map[int32]map[*sub]struct{} // watch descriptor -> subscribers
	done  chan struct{}               // closed when the reader has returned
	err   error                       // why the notifier stopped: closed, or a read failure
	obs   int                         // observers' subscriptions to the directory's watch
	nread uint64                      // events read (tests)
}

// sub is one subscriber to a watch: a waiter (ch) or the driver's holders
// (fn, given the name of the directory entry an event was about, or "" for
// an event that may concern any).
type sub struct {
	mask uint32        // the events it wants
	ch   chan struct{} // notified without blocking
	fn   func(string)  // called from the reader goroutine, without n.mu
}

const (
	// waitMask is what a waiter's watch on a lock file asks of the kernel:
	// what may mean the lock is free or at another file. IN_CLOSE_NOWRITE
	// too, for holders that lock a read-only file (flock(1)). IN_ATTRIB is
	// how an unlink or a rename over the file shows while it is open (its
	// link count changes), and how a holder that keeps the file open tells
	// of its release (it sets the file's times).
	waitMask = unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF
	// dirMask is the holders' watch on the directory: an entry removed,
	// renamed away or renamed over (the only ways a lock file stops being
	// the lock's), or the directory itself moved or removed. dlock never
	// does any of these itself, so a holder costs no events and no system
	// call.
	dirMask = unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_MOVE_SELF | unix.IN_DELETE_SELF
	// obsDirMask is an observer's watch on the directory: what the holders
	// watch, and an entry created (a leader file made by its first
	// holder). The kernel's watch on the directory (one per file, with one
	// mask) asks for it while an observer is subscribed (addWatch); holders
	// are not told of it.
	obsDirMask = dirMask | unix.IN_CREATE
)

// limitError is an inotify error that means a limit of the user's (or the
// system's) was reached.
type limitError struct{ err error }

func (e limitError) Error() string { return e.err.Error() }
func (e limitError) Unwrap() error { return e.err }

func isLimit(err error) bool {
	if err == nil {
		return false
	}
	var le limitError
	return errors.As(err, &le)
}

// watchFile starts delivering events on the file (or directory) f refers
// to (the very file, through /proc/self/fd, not whatever its name now points
// to) to s. The returned function stops it. Every watch on one file must use
// the same mask: a second watch replaces the first's.
func (n *notifier) watchFile(f *os.File, s *sub) (stop func(), err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return nil, n.err
	}
	if n.f == nil {
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return nil, limitErr("inotify_init", err)
		}
		n.f = os.NewFile(uintptr(fd), "inotify")
		n.subs = map[int32]map[*sub]struct{}{}
		n.done = make(chan struct{})
		go n.read(n.f, n.done)
	}
	observer := s.mask == obsDirMask
	if observer {
		n.obs++
	}
	wd, err := n.addWatch(f, s.mask)
	if err != nil {
		if observer {
			n.obs--
		}
		return nil, limitErr("inotify_add_watch "+f.Name(), err)
	}
	w := int32(wd)
	if n.subs[w] == nil {
		n.subs[w] = map[*sub]struct{}{}
	}
	n.subs[w][s] = struct{}{}
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		subs, ok := n.subs[w]
		if !ok {
			return // the kernel dropped the watch (IN_IGNORED), or the notifier stopped
		}
		delete(subs, s)
		if observer {
			n.obs--
		}
		switch {
		case len(subs) == 0:
			delete(n.subs, w)
			unix.InotifyRmWatch(int(n.f.Fd()), uint32(w))
		case observer && n.obs == 0:
			// Holders only: entries created are not asked for any more
			// (if this fails, they come and are not delivered).
			n.addWatch(f, dirMask)
		}
	}, nil
}

// addWatch sets the kernel's watch on f for subscribers of mask; n.mu is
// held. The directory's watch asks for the entries created (obsDirMask)
// only while an observer is subscribed: holders do not need them, and
// every name's first use would otherwise wake every client's reader.
func (n *notifier) addWatch(f *os.File, mask uint32) (int, error) {
	if mask == dirMask || mask == obsDirMask {
		mask = dirMask | unix.IN_ONLYDIR
		if n.obs > 0 {
			mask = obsDirMask | unix.IN_ONLYDIR
		}
	}
	path := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	wd, err := unix.InotifyAddWatch(int(n.f.Fd()), path, mask)
	if errors.Is(err, unix.ENOENT) { // no /proc: by name, and sameID checks after
		wd, err = unix.InotifyAddWatch(int(n.f.Fd()), f.Name(), mask|unix.IN_DONT_FOLLOW)
	}
	return wd, err
}

// limitErr wraps an inotify error, marking the ones that mean a limit was
// reached.
func limitErr(op string, err error) error {
	switch {
	case errors.Is(err, unix.EMFILE):
		return limitError{fmt.Errorf("%s: %w: the user's fs.inotify.max_user_instances (%s) is reached "+
			"(each process holding or waiting for a file lock uses one); raise it with sysctl",
			op, err, sysctl("max_user_instances"))}
	case errors.Is(err, unix.ENOSPC):
		return limitError{fmt.Errorf("%s: %w: the user's fs.inotify.max_user_watches (%s) is reached; raise it with sysctl",
			op, err, sysctl("max_user_watches"))}
	case errors.Is(err, unix.ENFILE), errors.Is(err, unix.ENOMEM):
		return limitError{fmt.Errorf("%s: %w", op, err)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func sysctl(name string) string {
	b, err := os.ReadFile("/proc/sys/fs/inotify/" + name)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// waitErr is the error of a waiter that could not watch the lock file at
// path. At an inotify limit it may pass (others release their instances):
// it is marked so that a blocking Lock retries with backoff.
func waitErr(path string, err error) error {
	switch {
	case errors.Is(err, driver.ErrClosed):
		return err
	case isLimit(err):
		return driver.Unavailable(fmt.Errorf("filelock: cannot wait for %s: %w", path, err))
	}
	return fmt.Errorf("filelock: cannot wait for %s: %w", path, err)
}

func (n *notifier) read(f *os.File, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	var fns []func()
	for {
		k, err := f.Read(buf)
		if err != nil {
			n.mu.Lock()
			if n.err == nil {
				n.err = fmt.Errorf("filelock: inotify read: %w", err)
			}
			fns = n.notifyAll(fns[:0])
			n.subs = nil
			n.mu.Unlock()
			for _, fn := range fns {
				fn()
			}
			return
		}
		n.mu.Lock()
		fns = fns[:0]
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := ""
			if nameLen > 0 && off+unix.SizeofInotifyEvent+nameLen <= k {
				name = string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen], "\x00"))
			}
			off += unix.SizeofInotifyEvent + nameLen
			n.nread++
			switch {
			case mask&unix.IN_Q_OVERFLOW != 0:
				// Events were dropped, any of them a waiter's wake-up or a
				// holder's loss: everyone looks for themselves.
				fns = n.notifyAll(fns)
			case mask&unix.IN_IGNORED != 0:
				// The kernel removed the watch (the file is gone, or its
				// file system unmounted): tell everyone on it, and forget
				// it.
				for s := range n.subs[wd] {
					fns = s.notify(fns, "")
				}
				delete(n.subs, wd)
			default:
				for s := range n.subs[wd] {
					if s.mask&mask != 0 {
						fns = s.notify(fns, name)
					}
				}
			}
		}
		n.mu.Unlock()
		for _, fn := range fns {
			fn()
		}
	}
}

// notifyAll wakes every subscriber; n.mu is held.
func (n *notifier) notifyAll(fns []func()) []func() {
	for _, subs := range n.subs {
		for s := range subs {
			fns = s.notify(fns, "")
		}
	}
	return fns
}

// notify wakes a waiter now, or adds a call of the holders' function to fns.
func (s *sub) notify(fns []func(), name string) []func() {
	if s.fn != nil {
		return append(fns, func() { s.fn(name) })
	}
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return fns
}

// stopped returns why the notifier stopped (closed, or inotify failed), or
// nil while it runs.
func (n *notifier) stopped() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// close stops the reader and waits for it; waiters wake and find it
// stopped.
func (n *notifier) close() {
	n.mu.Lock()
	f, done := n.f, n.done
	n.err = driver.ErrClosed
	n.mu.Unlock()
	if f != nil {
		f.Close()
		<-done
	}
}

// waiter is a waiting Acquire's subscription.
type waiter struct{ sub *sub }

func newWaiter() *waiter {
	return &waiter{&sub{mask: waitMask, ch: make(chan struct{}, 1)}}
}

// wait blocks until the waiter is notified or ctx is done.
func (w *waiter) wait(ctx context.Context) error {
	select {
	case <-w.sub.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
