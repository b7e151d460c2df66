package filelock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// tokensName is the directory's token file. It keeps the highest token
// granted for any lock in the directory, so that a lock file removed or
// replaced (or holding stray text) does not make tokens start again: each
// grant takes one above both the lock file's count and this file's. Lock
// file names end in ".lock" (fileName), so no lock can be called this.
//
// Its text is "LAST RESERVED BOOT": the last token granted; a ceiling,
// synced to disk before any token above it is granted; and the boot it was
// written in (/proc/sys/kernel/random/boot_id). LAST is written without a
// sync: only a crash of the whole system loses written data, and that
// changes the boot ID, so a count from another boot continues from RESERVED,
// above anything granted before the crash. Tokens so survive a crash at the
// cost of one sync per tokensReserve grants rather than one per grant.
const tokensName = "dlock-tokens"

// tokensReserve is how many grants one sync of the tokens file covers.
const tokensReserve = 1024

// maxText is more than either file ever holds: longer text is stray.
const maxText = 128

// tokenCount is what the tokens file holds.
type tokenCount struct {
	last, reserved uint64
	boot           string
}

// parseCount reads the tokens file's text; stray text counts as zero (see
// parseToken).
func parseCount(b []byte) tokenCount {
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return tokenCount{}
	}
	last, err1 := strconv.ParseUint(f[0], 10, 64)
	reserved, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || reserved < last {
		return tokenCount{}
	}
	return tokenCount{last, reserved, f[2]}
}

func (c tokenCount) text() []byte {
	return fmt.Appendf(nil, "%d %d %s\n", c.last, c.reserved, c.boot)
}

// bootID identifies this boot of the system; "" if unknown, which makes
// every grant sync.
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// parseToken reads the decimal token a lock file holds. Anything else
// (stray text, a number too large) counts as 0, which is safe as long as
// the other of the two files keeps its count: see tokensName.
func parseToken(b []byte) uint64 {
	text := strings.TrimSpace(string(b))
	if text == "" || text[0] < '0' || text[0] > '9' {
		return 0
	}
	tok, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return 0
	}
	return tok
}

// readHead reads the start of a small file and tells its length (up to
// maxText). Text that long is stray: it comes back empty.
func readHead(f *os.File) (text []byte, size int, err error) {
	buf := make([]byte, maxText)
	// One pread: the file is read whole by it (os.File.ReadAt would read
	// again to learn of the end).
	n, err := unix.Pread(int(f.Fd()), buf, 0)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Pread(int(f.Fd()), buf, 0)
	}
	if err != nil {
		return nil, 0, &os.PathError{Op: "read", Path: f.Name(), Err: err}
	}
	if n == len(buf) {
		return nil, n, nil
	}
	return buf[:n], n, nil
}

// readToken reads a lock file's token.
func readToken(f *os.File) (tok uint64, size int, err error) {
	b, size, err := readHead(f)
	return parseToken(b), size, err
}

// writeText writes text over f's text, which was size bytes long.
func writeText(f *os.File, text []byte, size int) error {
	if _, err := f.WriteAt(text, 0); err != nil {
		return err
	}
	if size > len(text) { // stray text, or a shorter boot ID
		return f.Truncate(int64(len(text)))
	}
	return nil
}

// grantToken gives the holder of lock file f (which we hold locked) its
// token: one above both the file's and the directory's count, counted in
// the tokens file first. It all happens under the tokens file's lock:
// readers share a lock file, and two of them must not write its count out
// of order.
func (d *fileDriver) grantToken(ctx context.Context, f *os.File) (uint64, error) {
	return d.bumpTokens(ctx, func(bump func(floor uint64) (uint64, error)) (uint64, error) {
		ft, fsize, err := readToken(f)
		if err != nil {
			return 0, err
		}
		tok, err := bump(ft)
		if err != nil {
			return 0, err
		}
		// The lock file's copy is what Status reports, and what an older
		// dlock sharing the directory counts from.
		if err := writeText(f, append(strconv.AppendUint(make([]byte, 0, 21), tok, 10), '\n'), fsize); err != nil {
			return 0, err
		}
		return tok, nil
	})
}

// bumpTokens runs grant under the tokens file's lock; grant's bump counts
// a grant in the tokens file: it returns one above both floor and the
// file's count, and records it.
func (d *fileDriver) bumpTokens(ctx context.Context, grant func(bump func(floor uint64) (uint64, error)) (uint64, error)) (uint64, error) {
	d.tokMu.Lock() // flock does not exclude goroutines sharing one open file
	defer d.tokMu.Unlock()
	for {
		if d.tokF == nil {
			f, id, err := d.openTokens()
			if err != nil {
				return 0, err
			}
			d.tokF, d.tokID = f, id
		}
		fd := int(d.tokF.Fd())
		if err := flockCtx(ctx, fd, d.isClosed); err != nil {
			return 0, err
		}
		tok, err := grant(d.bumpLocked)
		unix.Flock(fd, unix.LOCK_UN)
		if errors.Is(err, errReplaced) {
			d.tokF.Close()
			d.tokF = nil
			continue
		}
		return tok, err
	}
}

var errReplaced = errors.New("replaced")

// bumpLocked does bumpTokens' work under the tokens file's flock.
func (d *fileDriver) bumpLocked(floor uint64) (uint64, error) {
	// Removed or replaced since we opened it: the file at the name counts.
	if same, err := d.idAt(d.tokID, tokensName); err != nil {
		return 0, err
	} else if !same {
		return 0, errReplaced
	}
	b, size, err := readHead(d.tokF)
	if err != nil {
		return 0, err
	}
	c := parseCount(b)
	boot := bootID()
	sync := boot == ""
	if c.boot != boot {
		// Written in another boot: what was not synced may be lost.
		c.last, c.boot = c.reserved, boot
	}
	tok := max(floor, c.last)
	if tok == math.MaxUint64 {
		return 0, fmt.Errorf("token %d cannot be raised: edit %s and the lock file", tok, tokensName)
	}
	tok++
	c.last = tok
	if tok > c.reserved {
		c.reserved = tok + min(tokensReserve-1, math.MaxUint64-tok)
		sync = true
	}
	if err := writeText(d.tokF, c.text(), size); err != nil {
		return 0, err
	}
	if sync {
		if err := unix.Fdatasync(int(d.tokF.Fd())); err != nil {
			return 0, fmt.Errorf("fdatasync: %w", err)
		}
	}
	return tok, nil
}

// openTokens opens the tokens file, making it if missing; a new file's
// directory entry is synced too, or a crash could lose the file.
func (d *fileDriver) openTokens() (*os.File, fileID, error) {
	f, id, err := d.openAtID(tokensName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL)
	if err == nil {
		if err := unix.Fsync(int(d.dirf.Fd())); err != nil {
			f.Close()
			return nil, fileID{}, fmt.Errorf("filelock: fsync %s: %w", d.dir, err)
		}
		return f, id, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return nil, fileID{}, err
	}
	return d.openAtID(tokensName, unix.O_RDWR)
}

// flockCtx takes an exclusive flock that others hold only for a read, a
// write and at times a sync. It does not block in the kernel, where a holder
// stopped mid-update (SIGSTOP) could keep it past ctx or its driver's Close.
func flockCtx(ctx context.Context, fd int, closed func() bool) error {
	return lockCtx(ctx, closed, func() error {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return unix.EAGAIN
		}
		return err
	})
}

// lockCtx calls try until it returns anything but EAGAIN, backing off from
// 20 µs to 10 ms: for locks held only for a moment (a read and a write),
// where an inotify watch would cost more than the wait.
func lockCtx(ctx context.Context, closed func() bool, try func() error) error {
	delay := 20 * time.Microsecond
	for {
		err := try()
		if !errors.Is(err, unix.EAGAIN) {
			return err
		}
		if closed() {
			return driver.ErrClosed
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}
