package drivertest

// The edges of the API every driver must keep: bad input, names of any
// bytes, Do.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

func testBadInput(t *testing.T, s *suite) {
	c, _ := s.client(t)
	name := lockName(t)
	var nilCtx context.Context
	cases := []struct {
		desc  string
		call  func() error
		words []string
	}{
		{"empty name", func() error { _, err := c.Mutex("").Lock(s.ctx); return err }, []string{"name"}},
		{"empty name TryLock", func() error { _, err := c.Mutex("").TryLock(s.ctx); return err }, []string{"name"}},
		{"zero TTL", func() error { _, err := c.Mutex(name, dlock.WithTTL(0)).Lock(s.ctx); return err }, []string{"TTL"}},
		{"negative TTL", func() error { _, err := c.Mutex(name, dlock.WithTTL(-time.Second)).Lock(s.ctx); return err }, []string{"TTL"}},
		{"margin = TTL", func() error {
			_, err := c.Mutex(name, dlock.WithTTL(time.Second), dlock.WithSafetyMargin(time.Second)).Lock(s.ctx)
			return err
		}, []string{"margin"}},
		{"negative margin", func() error {
			_, err := c.Mutex(name, dlock.WithSafetyMargin(-1)).Lock(s.ctx)
			return err
		}, []string{"margin"}},
		{"renew interval >= TTL", func() error {
			_, err := c.Mutex(name, dlock.WithTTL(time.Second), dlock.WithRenewInterval(time.Second)).Lock(s.ctx)
			return err
		}, []string{"renew interval"}},
		{"renew interval = TTL - margin", func() error {
			_, err := c.Mutex(name, dlock.WithTTL(time.Second), dlock.WithSafetyMargin(100*time.Millisecond),
				dlock.WithRenewInterval(900*time.Millisecond)).Lock(s.ctx)
			return err
		}, []string{"renew interval"}},
		{"negative max hold", func() error { _, err := c.Mutex(name, dlock.WithMaxHold(-1)).Lock(s.ctx); return err }, []string{"max hold"}},
		{"nil context", func() error { _, err := c.Mutex(name).Lock(nilCtx); return err }, []string{"ctx"}},
		{"nil Do function", func() error { return dlock.Do(s.ctx, c, name, nil) }, []string{"fn"}},
	}
	for _, tc := range cases {
		start := time.Now()
		err := tc.call()
		if time.Since(start) > time.Second {
			t.Errorf("%s: took %v, want an answer at once", tc.desc, time.Since(start))
		}
		if err == nil || !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("%s: error %v, want ErrInvalidArgument", tc.desc, err)
			continue
		}
		for _, w := range tc.words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not name %q", tc.desc, err, w)
			}
		}
	}
	// Nothing was taken: the lock is free.
	l, err := c.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock after bad input: %v", err)
	}
	if err := l.Unlock(nilCtx); !errors.Is(err, dlock.ErrInvalidArgument) {
		t.Errorf("Unlock(nil) = %v, want ErrInvalidArgument", err)
	}
	unlock(t, l)
}

// testNames: names of any bytes work, and names that an encoding could
// confuse stay distinct locks.
func testNames(t *testing.T, s *suite) {
	c, _ := s.client(t)
	base := lockName(t)
	names := []string{
		"a", "A", "a/b", "a%2Fb", "a_b", "a-b", "a b", "a/", "/a", " ", "/", "//", ".", "..",
		"日本語/ロック", "\x00", "a\x00b", "\xff\xfe", "tab\there", "new\nline",
		strings.Repeat("x", 1024), strings.Repeat("x", 1023) + "y",
	}
	var held []*dlock.Lease
	for _, n := range names {
		full := base + n
		l, err := c.Mutex(full).TryLock(s.ctx)
		if err != nil {
			t.Fatalf("TryLock(%q) while holding %d other names: %v", full, len(held), err)
		}
		if l.Name() != full {
			t.Errorf("Name() = %q, want %q", l.Name(), full)
		}
		held = append(held, l)
	}
	// A name alone (no prefix) of odd bytes works too.
	for _, n := range []string{"\x00", "/", "..", " "} {
		l, err := c.Mutex(n).TryLock(s.ctx)
		if err != nil {
			t.Fatalf("TryLock(%q): %v", n, err)
		}
		unlock(t, l)
	}
	other, _ := s.client(t)
	for _, l := range held {
		s.mustNotAcquire(t, other, l.Name())
		unlock(t, l)
	}
}

// testDo: Do holds the lock for fn and releases it, passing fn's error on.
func testDo(t *testing.T, s *suite) {
	c, _ := s.client(t)
	name := lockName(t)
	errFn := errors.New("fn failed")
	var token uint64
	err := dlock.Do(s.ctx, c, name, func(ctx context.Context, l *dlock.Lease) error {
		token = l.Token()
		s.mustNotAcquire(t, c, name)
		if ctx.Err() != nil {
			t.Errorf("fn's context already done: %v", ctx.Err())
		}
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	if token == 0 {
		t.Fatalf("fn did not run or saw token 0")
	}
	l, err := c.Mutex(name).TryLock(s.ctx)
	if err != nil {
		t.Fatalf("TryLock after Do: %v", err)
	}
	unlock(t, l)
}
