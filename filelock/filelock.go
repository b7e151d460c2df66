// Package filelock is a dlock driver for processes on one host, built on
// flock(2). The kernel releases a lock the moment its holder's process dies,
// so a crashed holder never blocks anyone; a waiter wakes on an inotify event
// when the holder closes the lock file, not on a timer.
//
// Each lock is a file in one directory, named after an encoding of the lock's
// name; the file holds the lock's fencing token as decimal text, so tokens
// keep increasing across processes and restarts for as long as the file
// lives. Lock files are never removed: removing one while it is held would
// let a second process lock a new file of the same name. A holder notices if
// its file is removed or replaced (at its next renewal) and reports the lease
// lost.
//
// URLs: "file:///path/to/dir", or "file://" for the default directory,
// $XDG_RUNTIME_DIR/dlock (else the temp dir's dlock-UID).
//
// Linux only: inotify is what makes waiting event-driven.
package filelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func init() {
	dlock.Register("file", func(_ context.Context, u *url.URL) (driver.Driver, error) {
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("%w: file URL %q: host %q: want file:///absolute/dir or file://", dlock.ErrInvalidArgument, u.Redacted(), u.Host)
		}
		if u.Opaque != "" {
			return nil, fmt.Errorf("%w: file URL %q: want file:///absolute/dir or file://", dlock.ErrInvalidArgument, u.Redacted())
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("%w: file URL %q: takes no query parameters", dlock.ErrInvalidArgument, u.Redacted())
		}
		return open(u.Path)
	})
}

// DefaultDir is the directory used when none is given: $XDG_RUNTIME_DIR/dlock,
// or dlock-UID in the temp dir.
func DefaultDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "dlock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("dlock-%d", os.Getuid()))
}

// New returns a client whose locks are files in dir ("" for DefaultDir).
// The directory is created (0700) if missing.
func New(dir string, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := open(dir)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

func open(dir string) (*fileDriver, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("%w: lock directory %q: want an absolute path", dlock.ErrInvalidArgument, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filelock: lock directory: %w", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: lock directory %q is not a directory", dlock.ErrInvalidArgument, dir)
	}
	return &fileDriver{dir: dir, open: map[*fileLock]struct{}{}}, nil
}

// fileDriver is one "connection": the set of lock files this client holds.
type fileDriver struct {
	dir string

	ino notifier // wakes waiters

	mu     sync.Mutex
	closed bool
	open   map[*fileLock]struct{} // held locks, closed by crash
}

var (
	_ driver.Driver    = (*fileDriver)(nil)
	_ driver.Capable   = (*fileDriver)(nil)
	_ driver.Inspector = (*fileDriver)(nil)
	_ driver.Lock      = (*fileLock)(nil)
)

var errClosed = errors.New("filelock: driver closed")

// Path returns the file that holds the lock called name.
func (d *fileDriver) path(name string) string { return filepath.Join(d.dir, fileName(name)) }

// fileName encodes any bytes as a file name: readable names stay readable,
// everything else is escaped, and long names are hashed. The prefixes keep
// the two forms from colliding.
func fileName(name string) string {
	var b strings.Builder
	b.WriteString("n-")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() > 200 {
		sum := sha256.Sum256([]byte(name))
		return "h-" + hex.EncodeToString(sum[:]) + ".lock"
	}
	return b.String() + ".lock"
}

func (d *fileDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, driver.Validity{}, errClosed
	}
	path := d.path(req.Name)
	var (
		f       *os.File
		ch      chan struct{} // wake-ups, once watching
		unwatch func()
		err     error
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
			if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
				return nil, driver.Validity{}, fmt.Errorf("filelock: %w", err)
			}
			if unwatch != nil { // a new file: watch it instead
				unwatch()
				if unwatch, err = d.ino.watch(path, ch); err != nil {
					unwatch = nil
					return nil, driver.Validity{}, err
				}
			}
		}
		since := time.Now()
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			if same, serr := sameFile(f, path); serr != nil || !same {
				// Removed or replaced between our open and our lock: the
				// file at path is the lock now.
				f.Close()
				f = nil
				continue
			}
			token, err := bumpToken(f)
			if err != nil {
				return nil, driver.Validity{}, fmt.Errorf("filelock: fencing token in %s: %w", path, err)
			}
			l := &fileLock{d: d, f: f, path: path, token: token}
			f = nil
			d.mu.Lock()
			d.open[l] = struct{}{}
			d.mu.Unlock()
			return l, driver.Validity{Since: since, TTL: req.TTL}, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			if !req.Wait {
				return nil, driver.Validity{}, driver.ErrNotAcquired
			}
		default:
			return nil, driver.Validity{}, fmt.Errorf("filelock: flock %s: %w", path, err)
		}
		if unwatch == nil {
			// Start watching only when we must wait (an uncontended lock
			// costs no inotify work), then try once more: the holder may
			// have gone between the attempt and the watch.
			ch = make(chan struct{}, 1)
			if unwatch, err = d.ino.watch(path, ch); err != nil {
				unwatch = nil
				return nil, driver.Validity{}, err
			}
			continue
		}
		if err := wait(ctx, ch); err != nil {
			return nil, driver.Validity{}, err
		}
		if same, _ := sameFile(f, path); !same {
			f.Close()
			f = nil
		}
	}
}

// sameFile reports whether f is still the file at path.
func sameFile(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
}

// bumpToken reads the file's token, adds one and writes it back.
func bumpToken(f *os.File) (uint64, error) {
	buf := make([]byte, 32)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	text := strings.TrimSpace(string(buf[:n]))
	var tok uint64
	if text != "" {
		if tok, err = strconv.ParseUint(text, 10, 64); err != nil {
			return 0, fmt.Errorf("malformed token %q: %w", text, err)
		}
	}
	tok++
	out := strconv.AppendUint(nil, tok, 10)
	out = append(out, '\n')
	if _, err := f.WriteAt(out, 0); err != nil {
		return 0, err
	}
	if n > len(out) { // only stray bytes can make the old text longer
		if err := f.Truncate(int64(len(out))); err != nil {
			return 0, err
		}
	}
	return tok, nil
}

func readToken(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return 0, nil
	}
	return strconv.ParseUint(text, 10, 64)
}

func (d *fileDriver) Close() error {
	d.mu.Lock()
	was := d.closed
	d.closed = true
	d.mu.Unlock()
	d.ino.close()
	if was {
		return errClosed
	}
	return nil
}

// crash closes every lock file without unlocking, as a dying process would.
// Close still stops the notifier.
func (d *fileDriver) crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for l := range d.open {
		l.mu.Lock()
		l.f.Close()
		l.mu.Unlock()
	}
	clear(d.open)
}

func (d *fileDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingNode,
		FIFO:    false,
		Scope:   "host",
		Notes: "flock(2) on one host; the kernel frees a dead holder's lock at once. " +
			"Tokens live in the lock file: they restart if the file is removed (a tmpfs runtime dir empties at reboot).",
	}
}

// Status tells whether name is held by trying it; waiters cannot be counted.
func (d *fileDriver) Status(ctx context.Context, name string) (driver.Status, error) {
	path := d.path(name)
	st := driver.Status{Waiters: -1}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("filelock: %w", err)
	}
	defer f.Close()
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); {
	case err == nil:
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
	case errors.Is(err, unix.EWOULDBLOCK):
		st.Held = true
		if st.Token, err = readToken(path); err != nil {
			return st, fmt.Errorf("filelock: fencing token in %s: %w", path, err)
		}
	default:
		return st, fmt.Errorf("filelock: flock %s: %w", path, err)
	}
	return st, nil
}

type fileLock struct {
	d     *fileDriver
	path  string
	token uint64

	mu sync.Mutex
	f  *os.File // nil once released
}

func (l *fileLock) Token() uint64         { return l.token }
func (l *fileLock) Lost() <-chan struct{} { return nil }

// Renew checks that the file we hold locked is still the lock's file.
func (l *fileLock) Renew(context.Context) (driver.Validity, error) {
	since := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return driver.Validity{}, driver.ErrLockLost
	}
	same, err := sameFile(l.f, l.path)
	if err != nil {
		return driver.Validity{}, fmt.Errorf("filelock: %w", err)
	}
	if !same {
		return driver.Validity{}, fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.path)
	}
	return driver.Validity{Since: since, TTL: 24 * time.Hour}, nil
}

// Release unlocks and closes the file; closing it is what wakes waiters.
func (l *fileLock) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return driver.ErrLockLost
	}
	same, err := sameFile(l.f, l.path)
	unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	cerr := l.f.Close()
	l.f = nil
	l.d.mu.Lock()
	delete(l.d.open, l)
	l.d.mu.Unlock()
	if err == nil && !same {
		return fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.path)
	}
	if cerr != nil {
		return fmt.Errorf("filelock: close %s: %w", l.path, cerr)
	}
	return nil
}
