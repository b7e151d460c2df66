package filelock

import (
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A client keeps the files of the names it released last open, unlocked,
// so that taking such a name again costs no open(2) and no close(2): a lock
// file (and an exclusive holder's leader file) is opened once per name, not
// once per grant. Closing an open lock file is how a release used to wake
// waiters (inotify IN_CLOSE_*), and closing the leader file how it woke
// observers; a file kept open stands for that with a change the same
// watches see: futimens(2) on the lock file after its flock is dropped
// (IN_ATTRIB, in every waiter's mask), and a write of the leader file's
// first byte, unchanged, after its mark is dropped (IN_MODIFY, in every
// observer's). A dying process closes all its files, kept ones included,
// so a death wakes everyone as before.
//
// A kept file is checked as a fresh one is: a lock file taken from the
// cache is flocked and then looked up at its name, as every grant does
// (grant), and the client's watch on the directory drops every kept file
// at any removal or rename in the directory (checkHeld). Files are kept
// only while that watch is on. A lock whose file was handed out
// (HeldFile) or that was lost does not keep its files, nor do permits.

// maxCached bounds the names whose files are kept open, across all clients
// of the process (two descriptors each at most): past it, a release closes
// another name's files to keep its own.
const maxCached = 128

// cachedNames counts the names kept open by all clients of the process.
var cachedNames atomic.Int64

// cachedFiles are the files of one name kept open between two grants.
type cachedFiles struct {
	f   *os.File // the lock file, unlocked
	id  fileID   // f's
	val *os.File // its leader file, unmarked; nil if never opened
}

func (c cachedFiles) close() {
	c.f.Close()
	if c.val != nil {
		c.val.Close()
	}
}

// takeCached returns the kept files of the lock file name, if any; they
// are the caller's from then on.
func (d *fileDriver) takeCached(name string) (cachedFiles, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.cache[name]
	if ok {
		delete(d.cache, name)
		cachedNames.Add(-1)
	}
	return c, ok
}

// putCached keeps c, the files of the lock file name, open for the next
// grant, or closes them. It closes another name's kept files if the
// process keeps maxCached names already.
func (d *fileDriver) putCached(name string, c cachedFiles) {
	var evict cachedFiles
	d.mu.Lock()
	_, dup := d.cache[name]
	keep := !d.closed && d.watching && !dup
	if keep && cachedNames.Load() >= maxCached {
		keep = false
		for other, oc := range d.cache { // any one: a map's order is random
			delete(d.cache, other)
			cachedNames.Add(-1)
			evict, keep = oc, true
			break
		}
	}
	if keep {
		d.cache[name] = c
		cachedNames.Add(1)
	}
	d.mu.Unlock()
	if evict.f != nil {
		evict.close()
	}
	if !keep {
		c.close()
	}
}

// dropCached closes every kept file of d.
func (d *fileDriver) dropCached() {
	d.mu.Lock()
	kept := make([]cachedFiles, 0, len(d.cache))
	for name, c := range d.cache {
		kept = append(kept, c)
		delete(d.cache, name)
	}
	cachedNames.Add(-int64(len(kept)))
	d.mu.Unlock()
	for _, c := range kept {
		c.close()
	}
}

// wakeWaiters tells waiters on the lock file f, unlocked and kept open,
// that it is free, as its close would: see above.
func wakeWaiters(f *os.File) error {
	// utimensat(fd, NULL, NULL, 0): the file itself, set to now.
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, f.Fd(), 0, 0, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
