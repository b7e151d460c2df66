package filelock

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock/driver"
)

// TestLeaderText: a reader takes a leader file's text only whole and of
// the marked holder: a torn or cut text, or a past holder's, is read again
// until the holder writes its own, and Holder gives up after textWait with
// an error matching ErrUnavailable; a stale tail after a shorter text is
// not part of it.
func TestLeaderText(t *testing.T) {
	text := valueText(7, "leader:7")
	f, err := os.CreateTemp(t.TempDir(), "leader")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	read := func() (driver.Holder, bool) {
		t.Helper()
		h, _, ok, err := readText(f, make([]byte, 8))
		if err != nil {
			t.Fatal(err)
		}
		return h, ok
	}
	f.WriteAt(valueText(6, strings.Repeat("long past value ", 20)), 0)
	f.WriteAt(text, 0)
	if h, ok := read(); !ok || h != (driver.Holder{Token: 7, Value: "leader:7"}) {
		t.Errorf("text over a longer one = %+v, %v", h, ok)
	}
	for i := range text {
		b := []byte{'0'}
		if text[i] == '0' {
			b[0] = '1'
		}
		f.WriteAt(b, int64(i))
		if h, ok := read(); ok {
			t.Errorf("byte %d changed: read as whole (%+v)", i, h)
		}
		f.WriteAt(text[i:i+1], int64(i))
	}
	f.Truncate(int64(len(text) - 1))
	if h, ok := read(); ok {
		t.Errorf("text cut short: read as whole (%+v)", h)
	}

	dir := t.TempDir()
	d, err := open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	lf, err := d.openAt(valueName(fileName("x")), unix.O_RDWR|unix.O_CREAT)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	lf.WriteAt(valueText(8, "past"), 0)
	if err := ofdLock(lf, unix.F_WRLCK, markBase+9, 1); err != nil { // a holder of 9 that does not write
		t.Fatal(err)
	}
	start := time.Now()
	h, err := d.Holder(t.Context(), "x")
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("Holder with token 9 marked and 8's text = %+v, %v; want ErrUnavailable", h, err)
	}
	if took := time.Since(start); took < textWait {
		t.Errorf("Holder gave up after %v, before textWait %v", took, textWait)
	}
	got := make(chan driver.Holder, 1)
	go func() {
		h, err := d.Holder(t.Context(), "x")
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	lf.WriteAt(valueText(9, "now"), 0)
	if h := <-got; h != (driver.Holder{Token: 9, Value: "now"}) {
		t.Errorf("Holder once 9 wrote its text = %+v", h)
	}
	ofdLock(lf, unix.F_UNLCK, markBase+9, 1)
	if h, err := d.Holder(t.Context(), "x"); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder with no mark = %+v, %v; want nobody", h, err)
	}
}

// TestNewestMark: of two holders' marks (one whose lock file was replaced
// and who has not noticed yet), readers take the newer.
func TestNewestMark(t *testing.T) {
	path := t.TempDir() + "/x.leader"
	var fs []*os.File
	for range 3 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fs = append(fs, f)
	}
	mark := func(f *os.File, typ int16, tok int64) {
		t.Helper()
		if err := ofdLock(f, typ, markBase+tok, 1); err != nil {
			t.Fatal(err)
		}
	}
	newest := func(want uint64) {
		t.Helper()
		if got, err := newestMark(fs[2]); err != nil || got != want {
			t.Errorf("newestMark = %d, %v; want %d", got, err, want)
		}
	}
	newest(0)
	mark(fs[1], unix.F_WRLCK, 9)
	mark(fs[0], unix.F_WRLCK, 5)
	newest(9)
	mark(fs[1], unix.F_UNLCK, 9)
	newest(5)
	mark(fs[0], unix.F_UNLCK, 5)
	newest(0)
}
