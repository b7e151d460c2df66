package filelock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// notifier wakes waiters when something happens to a lock file: a holder
// closing it (its release or its death) or the file being removed or
// replaced. One inotify instance serves all of a driver's waiters, read by
// one goroutine while anyone waits: closing an inotify instance costs the
// kernel an RCU grace period (~10-20 ms here), too much to pay per wait.
// Spurious wake-ups (another waiter giving up) cost one retry.
type notifier struct {
	mu   sync.Mutex
	f    *os.File                        // the inotify instance, in Go's poller; nil until first use
	subs map[int32]map[chan struct{}]int // watch descriptor -> waiters (counted)
	done chan struct{}                   // closed when the reader has returned
	err  error                           // why the reader stopped
}

// IN_CLOSE_NOWRITE too, for holders that lock a read-only file (flock(1)).
// Waiters keep their file open while they wait, so their own opens and
// closes do not make waiters wake each other in turn.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_CLOSE_NOWRITE | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// watch starts delivering events on the file now at path to ch. The
// returned function stops it.
func (n *notifier) watch(path string, ch chan struct{}) (stop func(), err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.f == nil {
		if n.err != nil {
			return nil, n.err
		}
		fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("filelock: inotify: %w", err)
		}
		n.f = os.NewFile(uintptr(fd), "inotify")
		n.subs = map[int32]map[chan struct{}]int{}
		n.done = make(chan struct{})
		go n.read(n.f, n.done)
	}
	wd, err := unix.InotifyAddWatch(int(n.f.Fd()), path, watchMask)
	if err != nil {
		return nil, fmt.Errorf("filelock: inotify watch %s: %w", path, err)
	}
	w := int32(wd)
	if n.subs[w] == nil {
		n.subs[w] = map[chan struct{}]int{}
	}
	n.subs[w][ch]++
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		subs := n.subs[w]
		if subs[ch]--; subs[ch] <= 0 {
			delete(subs, ch)
		}
		if len(subs) == 0 && n.f != nil {
			delete(n.subs, w)
			unix.InotifyRmWatch(int(n.f.Fd()), uint32(w)) // fails harmlessly if the file is gone
		}
	}, nil
}

func (n *notifier) read(f *os.File, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		k, err := f.Read(buf)
		if err != nil {
			n.mu.Lock()
			if !errors.Is(err, os.ErrClosed) {
				n.err = fmt.Errorf("filelock: inotify read: %w", err)
			}
			for _, subs := range n.subs {
				for ch := range subs {
					notify(ch)
				}
			}
			n.mu.Unlock()
			return
		}
		n.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			nameLen := binary.NativeEndian.Uint32(buf[off+12:])
			for ch := range n.subs[wd] {
				notify(ch)
			}
			off += unix.SizeofInotifyEvent + int(nameLen)
		}
		n.mu.Unlock()
	}
}

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// close stops the reader and waits for it.
func (n *notifier) close() {
	n.mu.Lock()
	f, done := n.f, n.done
	n.f = nil
	n.err = errClosed
	n.mu.Unlock()
	if f != nil {
		f.Close()
		<-done
	}
}

// wait blocks until ch is notified or ctx is done.
func wait(ctx context.Context, ch chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
