package filelock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// The value kept with an exclusive lock (Request.Value, an election's
// leader's) lives in the lock's leader file NAME.leader, never in the lock
// file: an observer has to tell whether the lock is held without taking
// the lock file's flock, since a probe there could make a waiter miss its
// wake-up (waiters wake on a close of the lock file, or a change of its
// times after an unlock, not on an unlock alone).
//
// Every exclusive grant (a Mutex's, a writer's, a leader's) first marks the
// leader file with its token: an open file description (OFD) write lock on
// the one byte at markBase+TOKEN, far past any text, which it keeps until
// it gives the lock up (it unlocks it, then closes the leader file or
// rewrites its first byte to wake observers, before it unlocks the lock
// file) or dies, when the kernel drops it. Tokens are unique, so marks never
// contend. Then it writes its text in place: "CRC TOKEN LEN\nVALUE", CRC
// being the CRC-64 of what follows it. A reader finds the newest mark with
// F_OFD_GETLK (which takes nothing, and reports where the conflicting lock
// starts, so the token), reads the text without any lock, and takes it only
// if it is whole (its CRC) and of the marked token: a text being written,
// or a past holder's, is read again (the holder is writing it). No mark
// means nobody. Readers so never make a holder wait, nor a holder a reader
// for longer than a write. OFD locks are apart from flock(2), so none of
// this touches the lock itself; and the leader file keeps its inode (it is
// never renamed), so a grant costs no directory change.

// maxValue bounds a leader's value: the leader file is read whole by every
// observer at every change.
const maxValue = 1 << 20

// markBase is where the leader file's marks start: the mark of token T is
// the byte markBase+T. Tokens at or above markBase cannot be marked.
const markBase = 1 << 62

// headerMax bounds the text's first line: "CRC TOKEN LEN\n".
const headerMax = 16 + 1 + 20 + 1 + 20 + 1

var crcTable = crc64.MakeTable(crc64.ECMA)

// valueName is the leader file of the lock file lockName. Escaped names
// hold no '.', so it is no lock's file.
func valueName(lockName string) string { return baseName(lockName) + ".leader" }

func checkValue(value string) error {
	if len(value) > maxValue {
		return driver.InvalidArgument("filelock: value", fmt.Sprintf("%d bytes", len(value)), fmt.Sprintf("at most %d bytes", maxValue))
	}
	return nil
}

// valueText is the leader file's text for token tok and value.
func valueText(tok uint64, value string) []byte {
	text := make([]byte, 17, 17+headerMax+len(value))
	text = strconv.AppendUint(text, tok, 10)
	text = append(text, ' ')
	text = strconv.AppendInt(text, int64(len(value)), 10)
	text = append(text, '\n')
	text = append(text, value...)
	crc := strconv.FormatUint(crc64.Checksum(text[17:], crcTable), 16)
	copy(text, "0000000000000000"[len(crc):])
	copy(text[16-len(crc):], crc)
	text[16] = ' '
	return text
}

// publishLocked marks the leader file with l's token, if it is not marked
// yet, and writes value, with the token, as its text; l.mu is held, and l
// holds the lock exclusively. If the text cannot be written the leader
// file is let go (readers find nobody, never a half-written text) until
// the next SetValue.
func (l *fileLock) publishLocked(value string) error {
	d := l.d
	if l.token >= markBase {
		return fmt.Errorf("filelock: token %d is too large to mark the leader file with (at most %d)", l.token, uint64(markBase-1))
	}
	if l.val == nil {
		f, err := d.openAt(valueName(l.name), unix.O_RDWR|unix.O_CREAT)
		if err != nil {
			return mayPass(err)
		}
		l.val = f
	}
	f := l.val
	if !l.marked {
		// First, so that the text's write tells observers (inotify) of a
		// holder already marked.
		if err := ofdLock(f, unix.F_WRLCK, markBase+int64(l.token), 1); err != nil {
			l.unpublishLocked()
			return fmt.Errorf("filelock: fcntl F_OFD_SETLK %s: %w", f.Name(), err)
		}
		l.marked = true
	}
	text := valueText(l.token, value)
	if _, err := f.WriteAt(text, 0); err != nil {
		l.unpublishLocked()
		return mayPass(fmt.Errorf("filelock: write %s: %w", f.Name(), err))
	}
	l.valFirst = text[0]
	return nil
}

// unpublishLocked drops the mark and closes the leader file: readers find
// nobody. The mark goes first: a close wakes observers, and the kernel
// drops the locks of a closed file only after it has told them. l.mu is
// held.
func (l *fileLock) unpublishLocked() {
	if l.val != nil {
		if l.marked {
			ofdLock(l.val, unix.F_UNLCK, markBase+int64(l.token), 1)
		}
		l.val.Close()
		l.val, l.marked = nil, false
	}
}

// unmarkLocked drops the mark, as unpublishLocked does, but keeps the
// leader file open: it wakes observers with a write of the text's first
// byte, unchanged, in place of the close (see cache.go). It reports false
// if that failed (the mark may be gone or not): the file has to be closed.
// l.mu is held.
func (l *fileLock) unmarkLocked() bool {
	if l.val == nil || !l.marked {
		return true
	}
	if err := ofdLock(l.val, unix.F_UNLCK, markBase+int64(l.token), 1); err != nil {
		return false
	}
	l.marked = false
	_, err := l.val.WriteAt([]byte{l.valFirst}, 0)
	return err == nil
}

// SetValue replaces the value kept with the lock, if l still holds it (its
// file is still the lock's); otherwise it returns an error matching
// driver.ErrLockLost and changes nothing.
func (l *fileLock) SetValue(_ context.Context, value string) error {
	if err := checkValue(value); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return driver.ErrLockLost
	}
	if !l.exclusive {
		return fmt.Errorf("%w: filelock: a value kept with a shared lock or a permit", driver.ErrNotSupported)
	}
	if l.lost != nil {
		select {
		case <-l.lost:
			return fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.f.Name())
		default:
		}
	}
	same, err := l.d.sameID(l.id, l.name)
	if err != nil {
		return fmt.Errorf("filelock: %w", err)
	}
	if !same {
		return fmt.Errorf("%w: lock file %s was removed or replaced", driver.ErrLockLost, l.f.Name())
	}
	if l.val != nil {
		if at, err := l.d.fileAt(l.val, valueName(l.name)); err != nil || !at {
			l.unpublishLocked() // removed or replaced: write the one readers find
		}
	}
	return l.publishLocked(value)
}

// Holder returns the exclusive holder of name, as its leader file says: the
// zero Holder if nobody holds it exclusively (or the directory was moved or
// removed since the driver opened it).
func (d *fileDriver) Holder(ctx context.Context, name string) (driver.Holder, error) {
	if err := d.begin(); err != nil {
		return driver.Holder{}, err
	}
	defer d.calls.Done()
	if same, err := d.dirAt(); err != nil || !same {
		return driver.Holder{}, err // nobody holds a lock there any more
	}
	f, err := d.openValue(valueName(fileName(name)))
	if err != nil || f == nil {
		return driver.Holder{}, err
	}
	defer f.Close()
	return d.readHolder(ctx, f)
}

// openValue opens the leader file vname for reading; nil if there is none.
func (d *fileDriver) openValue(vname string) (*os.File, error) {
	f, err := d.openAt(vname, unix.O_RDONLY)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, mayPass(err)
	}
	return f, nil
}

// readHolder reads the leader file f: the zero Holder if it is not marked
// held. A text being written, or not yet written by the marked holder, is
// read again, backing off as lockCtx does, until ctx ends.
func (d *fileDriver) readHolder(ctx context.Context, f *os.File) (driver.Holder, error) {
	var (
		h    driver.Holder
		tok  uint64
		buf  = make([]byte, headerMax+64)
		rctx context.Context
	)
	rctx, cancel := context.WithTimeout(ctx, textWait)
	defer cancel()
	err := lockCtx(rctx, d.isClosed, func() error {
		var err error
		tok, err = newestMark(f)
		if err != nil || tok == 0 {
			h = driver.Holder{}
			return err
		}
		var ok bool
		h, buf, ok, err = readText(f, buf)
		if err != nil {
			return err
		}
		if !ok || h.Token != tok {
			return unix.EAGAIN // being written
		}
		return nil
	})
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		err = driver.Unavailable(fmt.Errorf("filelock: leader file %s: the holder of token %d has not written its value for %v (stopped?)", f.Name(), tok, textWait))
	}
	if err != nil {
		return driver.Holder{}, err
	}
	return h, nil
}

// textWait bounds the wait for a marked holder's text.
const textWait = 2 * time.Second

// newestMark returns the token of the newest holder that marks f, 0 if
// none. There is one but where a holder whose lock file was replaced has
// not yet noticed it (see "Files" in the package doc).
func newestMark(f *os.File) (uint64, error) {
	var tok uint64
	for from := int64(markBase); ; {
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: from, Len: 0}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
			return 0, fmt.Errorf("filelock: fcntl F_OFD_GETLK %s: %w", f.Name(), err)
		}
		if lk.Type == unix.F_UNLCK || lk.Start < from {
			return tok, nil
		}
		tok = uint64(lk.Start - markBase)
		from = lk.Start + 1
	}
}

// readText reads f's text into buf (grown as needed): the holder it names,
// and whether it is whole.
func readText(f *os.File, buf []byte) (driver.Holder, []byte, bool, error) {
	if cap(buf) < headerMax {
		buf = make([]byte, headerMax+64)
	}
	n, err := f.ReadAt(buf[:headerMax], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return driver.Holder{}, buf, false, mayPass(fmt.Errorf("filelock: read %s: %w", f.Name(), err))
	}
	head := buf[:n]
	nl := bytes.IndexByte(head, '\n')
	if nl < 0 {
		return driver.Holder{}, buf, false, nil
	}
	var (
		crc, tok uint64
		size     int
	)
	if nl < 17 || head[16] != ' ' {
		return driver.Holder{}, buf, false, nil
	}
	if _, err := fmt.Sscanf(string(head[:nl]), "%016x %d %d", &crc, &tok, &size); err != nil || size < 0 || size > maxValue {
		return driver.Holder{}, buf, false, nil
	}
	total := nl + 1 + size
	if cap(buf) < total {
		buf = make([]byte, total)
	}
	buf = buf[:cap(buf)]
	n, err = f.ReadAt(buf[:total], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return driver.Holder{}, buf, false, mayPass(fmt.Errorf("filelock: read %s: %w", f.Name(), err))
	}
	if n < total || crc64.Checksum(buf[17:total], crcTable) != crc {
		return driver.Holder{}, buf, false, nil
	}
	return driver.Holder{Token: tok, Value: string(buf[nl+1 : total])}, buf, true, nil
}
