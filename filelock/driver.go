package filelock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

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
		return nil, driver.InvalidArgument("filelock: lock directory", strconv.Quote(dir), "an absolute path")
	}
	dir = filepath.Clean(dir)
	dirf, err := openDir(dir, isDefault)
	if err != nil {
		return nil, err
	}
	dirID, err := statID(dirf)
	if err != nil {
		dirf.Close()
		return nil, fmt.Errorf("filelock: fstat %s: %w", dir, err)
	}
	return &fileDriver{dir: dir, dirf: dirf, dirID: dirID, tok: shareTokens(dirID), closing: make(chan struct{}),
		open: map[*fileLock]struct{}{}, cache: map[string]cachedFiles{}}, nil
}

// fileDriver is one "connection": the set of lock files this client holds.
type fileDriver struct {
	dir   string   // the directory's path, for messages and to notice it moved
	dirf  *os.File // the directory itself: lock files are opened relative to it
	dirID fileID   // dirf's

	ino notifier // wakes waiters, tells holders of a tampered file

	tok *tokensShare // the directory's tokens file, shared in the process (tokshare.go)
	// tokSeen: tok's file (tokSeenGen of its opens) was found at its name
	// while the directory was watched, when dirEvents was tokSeenAt. Used
	// in the driver's turn only.
	tokSeen    bool
	tokSeenAt  uint64
	tokSeenGen uint64

	dirEvents atomic.Uint64 // events of the watch on the directory (checkHeld)

	mu       sync.Mutex
	closed   bool                   // by Close, or by crash (tests)
	closing  chan struct{}          // closed with closed
	shut     bool                   // Close was called
	open     map[*fileLock]struct{} // held locks
	cache    map[string]cachedFiles // files kept open, by lock file name (cache.go)
	watching bool                   // the directory is watched for holders
	calls    sync.WaitGroup         // Acquire and Status calls in flight: Close waits for them
}

var (
	_ driver.Driver      = (*fileDriver)(nil)
	_ driver.Capable     = (*fileDriver)(nil)
	_ driver.Inspector   = (*fileDriver)(nil)
	_ driver.Lister      = (*fileDriver)(nil)
	_ driver.Observer    = (*fileDriver)(nil)
	_ driver.Lock        = (*fileLock)(nil)
	_ driver.ValueSetter = (*fileLock)(nil)
)

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
		return driver.ErrClosed
	}
	d.calls.Add(1)
	return nil
}

// Close drops every lock still held (closing a lock file frees its flock,
// as the end of a session would), and stops the notifier: waiting Acquires
// return ErrClosed. It returns once no call is left running.
func (d *fileDriver) Close() error {
	d.mu.Lock()
	was := d.shut
	if !d.closed {
		close(d.closing)
	}
	d.shut, d.closed = true, true
	held := make([]*fileLock, 0, len(d.open))
	for l := range d.open {
		held = append(held, l)
	}
	clear(d.open)
	d.mu.Unlock()
	if was {
		return driver.ErrClosed
	}
	for _, l := range held {
		l.drop()
	}
	d.dropCached()
	d.ino.close()
	d.calls.Wait()
	d.tok.unshare(d.dirID)
	return d.dirf.Close()
}

// crash closes every lock file without unlocking, as a dying process would.
// Close still stops the notifier.
func (d *fileDriver) crash() {
	d.mu.Lock()
	if !d.closed {
		close(d.closing)
	}
	d.closed = true
	held := make([]*fileLock, 0, len(d.open))
	for l := range d.open {
		held = append(held, l)
	}
	clear(d.open)
	d.mu.Unlock()
	for _, l := range held {
		l.mu.Lock()
		if l.val != nil {
			l.val.Close() // its mark goes with it, as in a death
			l.val, l.marked = nil, false
		}
		l.f.Close()
		l.f = nil
		if l.extra != nil {
			l.extra.Close()
			l.extra = nil
		}
		l.mu.Unlock()
	}
	d.dropCached()
}

// Dir returns the directory the driver keeps its lock files in: the one
// given to New or in the file:// URL, or DefaultDir. It lets a program keep
// its own files next to the locks (`dlock demo` keeps its counter there).
func (d *fileDriver) Dir() string { return d.dir }

func (d *fileDriver) Capabilities() driver.Capabilities {
	return driver.Capabilities{
		Fencing:   driver.FencingNode,
		FIFO:      false,
		Scope:     "host",
		Shared:    true,
		Semaphore: true,
		Election:  true,
		Notes: "flock(2) on one host, local file systems only; the kernel frees a dead holder's lock at once, " +
			"and a holder learns at once that its lock file was removed or replaced. " +
			"Tokens are kept in the lock file and in the directory's dlock-tokens file (crash-safe): they keep increasing " +
			"across a removed or replaced lock file, crashes and reboots, and restart only if both files are lost " +
			"(a tmpfs runtime directory empties at reboot). " +
			"Read-write locks are LOCK_SH/LOCK_EX on the one lock file; a waiting writer marks a turnstile file that keeps later readers out. " +
			"A semaphore permit is LOCK_EX on one of N permit files; N is kept in a file read-locked by holders and waiters, and another N is refused. " +
			"An exclusive holder's token and value (an election's leader's) are in a leader file it marks (an OFD lock) while it holds; readers take no lock and observers wake on inotify events.",
	}
}
