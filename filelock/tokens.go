package filelock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
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
	last, reserved, boot := scanCount(b)
	return tokenCount{last, reserved, string(boot)}
}

// scanCount is parseCount without allocating: boot is part of b.
func scanCount(b []byte) (last, reserved uint64, boot []byte) {
	var f [3][]byte
	n := 0
	for _, w := range bytes.Fields(b[:len(b):len(b)]) {
		if n == len(f) {
			return 0, 0, nil
		}
		f[n] = w
		n++
	}
	if n != len(f) {
		return 0, 0, nil
	}
	last, ok1 := parseDecimal(f[0])
	reserved, ok2 := parseDecimal(f[1])
	if !ok1 || !ok2 || reserved < last {
		return 0, 0, nil
	}
	return last, reserved, f[2]
}

// parseDecimal is strconv.ParseUint(b, 10, 64) on bytes.
func parseDecimal(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false // too large
		}
		v = v*10 + d
	}
	return v, true
}

func (c tokenCount) text() []byte { return c.appendText(nil) }

func (c tokenCount) appendText(b []byte) []byte {
	b = strconv.AppendUint(b, c.last, 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, c.reserved, 10)
	b = append(b, ' ')
	b = append(b, c.boot...)
	return append(b, '\n')
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
	tok, ok := parseDecimal(bytes.TrimSpace(b))
	if !ok {
		return 0
	}
	return tok
}

// readHead reads the start of a small file and tells its length (up to
// maxText). Text that long is stray: it comes back empty.
func readHead(f *os.File) (text []byte, size int, err error) {
	return readHeadInto(f, make([]byte, maxText))
}

// readHeadInto is readHead into buf, of maxText bytes.
func readHeadInto(f *os.File, buf []byte) (text []byte, size int, err error) {
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
	return readTokenInto(f, make([]byte, maxText))
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
// the tokens file first. A shared holder does it all under the tokens
// file's lock: readers share a lock file, and two of them must not write
// its count out of order. An exclusive one is the only one to write its
// file, so the tokens file's lock covers only the tokens file's update:
// a death between that and the file's write leaves a token counted but
// not used, which is harmless (tokens may skip).
func (d *fileDriver) grantToken(ctx context.Context, f *os.File, shared bool) (uint64, error) {
	if shared {
		return d.bumpTokens(ctx, f, 0)
	}
	var buf [maxText]byte
	ft, fsize, err := readTokenInto(f, buf[:])
	if err != nil {
		return 0, err
	}
	tok, err := d.bumpTokens(ctx, nil, ft)
	if err != nil {
		return 0, err
	}
	return tok, writeToken(f, tok, fsize, buf[:0])
}

// readTokenInto is readToken into buf, of maxText bytes.
func readTokenInto(f *os.File, buf []byte) (tok uint64, size int, err error) {
	b, size, err := readHeadInto(f, buf)
	return parseToken(b), size, err
}

// writeToken writes tok as the text of the lock file f, whose text was
// size bytes long. The lock file's copy is what Status reports, and what
// an older dlock sharing the directory counts from.
func writeToken(f *os.File, tok uint64, size int, buf []byte) error {
	return writeText(f, append(strconv.AppendUint(buf, tok, 10), '\n'), size)
}

// bumpTokens counts a grant in the tokens file, under its lock, and
// returns its token: one above both floor and the file's count. With the
// lock file f of a shared holder (nil otherwise), floor is read from f,
// and the token written to f, under that lock too.
//
// The grants that clients of the process ask for while one of them waits
// for the file's flock, or updates it, are counted together by the next
// client in turn, with one flock, one read and one write of the file
// (tokshare.go): under many names the clients of a process would
// otherwise queue for the file one grant at a time.
func (d *fileDriver) bumpTokens(ctx context.Context, f *os.File, floor uint64) (uint64, error) {
	s := d.tok
	own := bumpReq{f: f, floor: floor}
	select {
	case s.turn <- struct{}{}:
		return d.countTurn(ctx, &own)
	default:
	}
	r := &bumpReq{f: f, floor: floor, done: make(chan struct{})}
	s.mu.Lock()
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	lead, err := d.takeTurnOrResult(ctx, r)
	if err != nil {
		return 0, err
	}
	if !lead {
		return r.tok, r.err // counted by another client's batch
	}
	s.mu.Lock()
	taken := r.taken
	if !taken {
		s.queue = slices.DeleteFunc(s.queue, func(q *bumpReq) bool { return q == r })
	}
	s.mu.Unlock()
	if taken {
		// Counted by the client in turn before us, which ended its
		// wait before giving the turn up.
		d.giveTurn()
		<-r.done
		return r.tok, r.err
	}
	return d.countTurn(ctx, r)
}

// countTurn counts own, out of the queue, and then every grant queued by
// the time it has the tokens file's flock; d has the turn, and gives it up.
func (d *fileDriver) countTurn(ctx context.Context, own *bumpReq) (uint64, error) {
	defer d.giveTurn()
	s := d.tok
	for {
		if s.f == nil {
			f, id, err := d.openTokens()
			if err != nil {
				return 0, err // those queued stay: the next in turn counts them
			}
			s.f, s.id = f, id
			s.gen++
		}
		fd := int(s.f.Fd())
		if err := flockCtx(ctx, fd, d.isClosed); err != nil {
			return 0, err
		}
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		for _, q := range batch {
			q.taken = true
		}
		s.mu.Unlock()
		err := d.bumpBatch(own, batch)
		unix.Flock(fd, unix.LOCK_UN)
		if errors.Is(err, errReplaced) {
			s.f.Close()
			s.f = nil
			// Counted in the file now at the name: put back, still waiting.
			s.mu.Lock()
			for _, q := range batch {
				q.taken = false
			}
			s.queue = append(batch, s.queue...)
			s.mu.Unlock()
			continue
		}
		if err != nil {
			own.tok, own.err = 0, err
			for _, q := range batch {
				if q.err == nil {
					q.tok, q.err = 0, err
				}
			}
		}
		for _, q := range batch {
			close(q.done)
		}
		return own.tok, own.err
	}
}

// bumpBatch counts own and then the grants of batch in the tokens file,
// under its flock: each one's token is one above both its floor and the
// count the one before left.
func (d *fileDriver) bumpBatch(own *bumpReq, batch []*bumpReq) error {
	s := d.tok
	c, size, err := d.readCount()
	if err != nil {
		return err
	}
	sync := c.boot == ""
	s.count(own, &c)
	for _, q := range batch {
		s.count(q, &c)
	}
	if c.last > c.reserved {
		c.reserved = c.last + min(tokensReserve-1, math.MaxUint64-c.last)
		sync = true
	}
	if err := writeText(s.f, c.appendText(s.buf[:0]), size); err != nil {
		return err
	}
	if sync {
		if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
	}
	s.writeLockFile(own)
	for _, q := range batch {
		s.writeLockFile(q)
	}
	return nil
}

// count gives q the token above c's count and its floor (a shared
// holder's: its lock file's count, read here), and counts it in c.
func (s *tokensShare) count(q *bumpReq, c *tokenCount) {
	floor := q.floor
	if q.f != nil {
		ft, fsize, err := readTokenInto(q.f, s.lockBuf[:])
		if err != nil {
			q.err = err
			return
		}
		floor, q.size = ft, fsize
	}
	tok := max(floor, c.last)
	if tok == math.MaxUint64 {
		q.err = fmt.Errorf("token %d cannot be raised: edit %s and the lock file", tok, tokensName)
		return
	}
	tok++
	c.last, q.tok = tok, tok
}

// writeLockFile writes a shared holder's token to its lock file, once the
// tokens file counts it.
func (s *tokensShare) writeLockFile(q *bumpReq) {
	if q.f != nil && q.err == nil {
		q.err = writeToken(q.f, q.tok, q.size, s.lockBuf[:0])
	}
}

var errReplaced = errors.New("replaced")

// readCount reads the tokens file's count under its flock, as this boot
// may continue it, and the length of its text.
func (d *fileDriver) readCount() (tokenCount, int, error) {
	// Removed or replaced since we opened it: the file at the name counts.
	// Once it was found in place while the client watched the directory,
	// the watch tells of its removal or replacement (any event counts), so
	// it is not looked up again until an event comes.
	s := d.tok
	if gen := d.dirEvents.Load(); !d.tokSeen || d.tokSeenAt != gen || d.tokSeenGen != s.gen {
		watched := d.dirWatched()
		if same, err := d.idAt(s.id, tokensName); err != nil {
			return tokenCount{}, 0, err
		} else if !same {
			return tokenCount{}, 0, errReplaced
		}
		d.tokSeen, d.tokSeenAt, d.tokSeenGen = watched, gen, s.gen
	}
	b, size, err := readHeadInto(s.f, s.buf[:])
	if err != nil {
		return tokenCount{}, 0, err
	}
	var c tokenCount
	var cboot []byte
	c.last, c.reserved, cboot = scanCount(b)
	boot := bootID()
	c.boot = boot
	if string(cboot) != boot {
		// Written in another boot: what was not synced may be lost.
		c.last = c.reserved
	}
	return c, size, nil
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
