// Package filelock is a dlock driver for processes on one host, built on
// flock(2). The kernel releases a lock the moment its holder's process dies,
// so a crashed holder never blocks anyone; a waiter wakes on an inotify event
// when the holder closes the lock file, not on a timer.
//
// # Files
//
// Each lock is a file in one directory, named after an encoding of the lock's
// name (n-NAME.lock, or h-HASH.lock for long names), opened without following
// symbolic links: a symlink where a lock file goes is an error. Lock files
// are never removed: removing one while it is held would let a second
// process lock a new file of the same name. Holders watch the directory,
// and the moment a held file is removed, renamed or replaced, or the
// directory itself is moved, the lease is reported lost (driver.Lock.Lost
// closes); anything else that makes the path lead elsewhere (a parent
// moved) is noticed at the next renewal.
//
// # Fencing tokens
//
// A grant's token is one above both the number in its lock file and the
// count in the directory's file dlock-tokens (the highest token granted
// there); both are rewritten under the lock. dlock-tokens is synced to disk
// (fdatasync) once per 1024 grants, ahead of them, and a count written in an
// earlier boot continues above what was synced, so that a system crash
// cannot make a token repeat. Tokens so keep increasing across processes,
// crashes and reboots, and across a lock file that was removed, replaced or
// found holding stray text (which counts as 0). They start again only if
// both files are lost: a runtime directory on tmpfs empties at reboot, as
// does `rm -r` of the directory.
//
// # The directory
//
// URLs: "file:///path/to/dir", or "file://" for DefaultDir,
// $XDG_RUNTIME_DIR/dlock (else $TMPDIR/dlock-EUID, /tmp/dlock-EUID without
// $TMPDIR). The default directory must belong to the effective user and be
// writable by nobody else, and it must not be a symbolic link; its parent
// must be owned by root or that user and, if others may write to it, sticky
// (see DefaultDir). Otherwise opening fails, naming the directory and what
// was expected. A directory given in the URL is the caller's choice and is not
// checked that way: anyone who can write to it can break its locks (remove or
// replace a held lock file), so give one that only the users sharing the
// locks can write to. Lock files are made with mode 0600, so a directory
// serves one user (and root).
//
// The directory must be on a local file system (a disk, tmpfs, overlayfs,
// FUSE other than a network one). Opening refuses NFS, SMB/CIFS, 9p, AFS,
// CephFS, Coda, NCP and network FUSE file systems such as sshfs: there
// flock(2) is emulated with per-process byte-range locks or covers one client
// only, and inotify sees no other host's changes.
//
// # Waiting and inotify
//
// One inotify instance per driver (per Client) serves all its waiters and
// holders. If the kernel's queue overflows, every waiter wakes and retries
// and every holder checks its file. A process whose user has reached
// fs.inotify.max_user_instances (or max_user_watches) cannot wait on events:
// a waiting Acquire then fails at once with an error that matches
// driver.ErrUnavailable and names the limit (a blocking Lock retries it with
// backoff, so it still gets the lock, up to dlock.RetryMaxBackoff after it
// is freed instead of at once), and a holder goes without the watch,
// learning of a removed or replaced file at its next renewal instead
// (TTL/3).
//
// Errors of this host that may clear by themselves (a full disk or quota,
// open-file or memory limits) match driver.ErrUnavailable, so a blocking
// Lock retries them; everything else (a bad or untrusted directory, a
// symlink where a lock file goes, an I/O error) is reported at once.
//
// Linux only: inotify is what makes waiting event-driven.
package filelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
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

// New returns a client whose locks are files in dir ("" for DefaultDir,
// checked as DefaultDir says). The directory is created (0700) if missing.
func New(dir string, opts ...dlock.Option) (*dlock.Client, error) {
	d, err := open(dir)
	if err != nil {
		return nil, err
	}
	return dlock.NewClient(d, opts...)
}

func open(dir string) (*fileDriver, error) {
	isDefault := dir == ""
	if isDefault {
		dir = DefaultDir()
	}
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("%w: lock directory %q: want an absolute path", dlock.ErrInvalidArgument, dir)
	}
	dir = filepath.Clean(dir)
	dirf, err := openDir(dir, isDefault)
	if err != nil {
		return nil, err
	}
	return &fileDriver{dir: dir, dirf: dirf, open: map[*fileLock]struct{}{}}, nil
}

// fileDriver is one "connection": the set of lock files this client holds.
type fileDriver struct {
	dir  string   // the directory's path, for messages and to notice it moved
	dirf *os.File // the directory itself: lock files are opened relative to it

	ino notifier // wakes waiters, tells holders of a tampered file

	tokMu sync.Mutex
	tokF  *os.File // the directory's tokens file, once opened; tokMu

	mu       sync.Mutex
	closed   bool                   // by Close, or by crash (tests)
	shut     bool                   // Close was called
	open     map[*fileLock]struct{} // held locks
	watching bool                   // the directory is watched for holders
	calls    sync.WaitGroup         // Acquire and Status calls in flight: Close waits for them
}

var (
	_ driver.Driver    = (*fileDriver)(nil)
	_ driver.Capable   = (*fileDriver)(nil)
	_ driver.Inspector = (*fileDriver)(nil)
	_ driver.Lock      = (*fileLock)(nil)
)

var errClosed = fmt.Errorf("filelock: %w", driver.ErrClosed)

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

// openAt opens name in the lock directory, never through a symbolic link,
// and only if it is a regular file.
func (d *fileDriver) openAt(name string, flags int) (*os.File, error) {
	path := filepath.Join(d.dir, name)
	fd, err := unix.Openat(int(d.dirf.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("filelock: %s is a symbolic link: lock files are never opened through one", path)
	}
	if err != nil {
		return nil, fmt.Errorf("filelock: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("filelock: %w", &os.PathError{Op: "fstat", Path: path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("filelock: %s is not a regular file (mode %o)", path, st.Mode)
	}
	return f, nil
}

// sameFile reports whether f is still the file called name in the lock
// directory, and the directory still the one at d.dir: what a process
// opening the lock afresh would find.
func (d *fileDriver) sameFile(f *os.File, name string) (bool, error) {
	same, err := d.fileAt(f, name)
	if err != nil || !same {
		return same, err
	}
	return d.dirAt()
}

// fileAt reports whether f is the file called name in the lock directory.
func (d *fileDriver) fileAt(f *os.File, name string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return false, err
	}
	switch err := unix.Fstatat(int(d.dirf.Fd()), name, &pst, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, err
	}
	return fst.Dev == pst.Dev && fst.Ino == pst.Ino, nil
}

// dirAt reports whether the lock directory is still the one at its path.
func (d *fileDriver) dirAt() (bool, error) {
	var dst, pst unix.Stat_t
	if err := unix.Fstat(int(d.dirf.Fd()), &dst); err != nil {
		return false, err
	}
	switch err := unix.Stat(d.dir, &pst); {
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		return false, nil
	case err != nil:
		return false, err
	}
	return dst.Dev == pst.Dev && dst.Ino == pst.Ino, nil
}

// mayPass marks the errors of this host that may clear by themselves (a
// full disk or quota, the process's or the system's open-file or memory
// limits) as driver.ErrUnavailable, so that a blocking Lock retries them.
func mayPass(err error) error {
	for _, e := range []error{unix.ENOSPC, unix.EDQUOT, unix.EMFILE, unix.ENFILE, unix.ENOMEM} {
		if errors.Is(err, e) {
			return driver.Unavailable(err)
		}
	}
	return err
}

func (d *fileDriver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// begin registers a call that uses the directory; Close waits for it.
func (d *fileDriver) begin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	d.calls.Add(1)
	return nil
}

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
		return nil, errClosed
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

// Close drops every lock still held (closing a lock file frees its flock,
// as the end of a session would), and stops the notifier: waiting Acquires
// return ErrClosed. It returns once no call is left running.
func (d *fileDriver) Close() error {
	d.mu.Lock()
	was := d.shut
	d.shut, d.closed = true, true
	held := make([]*fileLock, 0, len(d.open))
	for l := range d.open {
		held = append(held, l)
	}
	clear(d.open)
	d.mu.Unlock()
	if was {
		return errClosed
	}
	for _, l := range held {
		l.drop()
	}
	d.ino.close()
	d.calls.Wait()
	d.tokMu.Lock()
	if d.tokF != nil {
		d.tokF.Close()
		d.tokF = nil
	}
	d.tokMu.Unlock()
	return d.dirf.Close()
}

// crash closes every lock file without unlocking, as a dying process would.
// Close still stops the notifier.
func (d *fileDriver) crash() {
	d.mu.Lock()
	d.closed = true
	held := make([]*fileLock, 0, len(d.open))
	for l := range d.open {
		held = append(held, l)
	}
	clear(d.open)
	d.mu.Unlock()
	for _, l := range held {
		l.mu.Lock()
		l.f.Close()
		l.f = nil
		l.mu.Unlock()
	}
}

func (d *fileDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing: driver.FencingNode,
		FIFO:    false,
		Scope:   "host",
		Notes: "flock(2) on one host, local file systems only; the kernel frees a dead holder's lock at once, " +
			"and a holder learns at once that its lock file was removed or replaced. " +
			"Tokens are kept in the lock file and in the directory's dlock-tokens file (crash-safe): they keep increasing " +
			"across a removed or replaced lock file, crashes and reboots, and restart only if both files are lost " +
			"(a tmpfs runtime directory empties at reboot).",
	}
}

// Status tells whether name is held by trying it; waiters cannot be counted.
// The token is 0 if the holder has not written one (or the file holds stray
// text).
func (d *fileDriver) Status(ctx context.Context, name string) (driver.Status, error) {
	st := driver.Status{Waiters: -1}
	if err := d.begin(); err != nil {
		return st, err
	}
	defer d.calls.Done()
	f, err := d.openAt(fileName(name), unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return st, nil
	}
	if err != nil {
		return st, mayPass(err)
	}
	defer f.Close()
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); {
	case err == nil:
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
	case errors.Is(err, unix.EWOULDBLOCK):
		st.Held = true
		if st.Token, _, err = readToken(f); err != nil {
			return st, fmt.Errorf("filelock: fencing token in %s: %w", f.Name(), err)
		}
	default:
		return st, fmt.Errorf("filelock: flock %s: %w", f.Name(), err)
	}
	return st, nil
}

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
