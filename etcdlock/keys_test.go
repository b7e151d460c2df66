package etcdlock

import (
	"errors"
	"strings"
	"testing"

	"github.com/dlockio/dlock/driver"
)

// TestKeyLayout pins the key layout the package doc describes: another
// build must find the same keys for the same names.
func TestKeyLayout(t *testing.T) {
	d := newDriver(nil, &Options{Prefix: "app/locks/"}, false)
	defer d.closeFn()
	for name, want := range map[string]string{
		"billing":     "app/locks/billing/",
		"a/b":         "app/locks/a%2Fb/",
		"v1.2~rc":     "app/locks/v1%2E2%7Erc/", // '.' and '~' were kept before internal/lockname
		"naïve lock":  "app/locks/na%C3%AFve%20lock/",
		"under_score": "app/locks/under_score/",
	} {
		if got := d.namePrefix(name); got != want {
			t.Errorf("namePrefix(%q) = %q, want %q", name, got, want)
		}
	}
	def := newDriver(nil, nil, false)
	defer def.closeFn()
	if def.root != DefaultPrefix+"/" {
		t.Errorf("default root = %q, want %q", def.root, DefaultPrefix+"/")
	}
}

// TestKindKeys pins where readers' and permits' keys go, and that the
// kinds' ranges do not overlap: every writer key sorts before "r", and one
// limit's prefix holds no other limit's keys.
func TestKindKeys(t *testing.T) {
	d := newDriver(nil, &Options{Prefix: "app"}, false)
	defer d.closeFn()
	pfx := d.namePrefix("jobs")
	ls := &lease{id: 0x7fffffffffffffff}
	for _, tc := range []struct {
		mode  driver.Mode
		limit int
		under string
		lim   int
	}{
		{driver.Exclusive, 0, "app/jobs/", 0},
		{driver.Shared, 0, "app/jobs/r/", 0},
		{driver.Exclusive, 5, "app/jobs/s5/", 5},
		{driver.Exclusive, 50, "app/jobs/s50/", 50},
	} {
		key := d.queueKey(pfx, tc.mode, tc.limit, ls)
		rest, ok := strings.CutPrefix(key, tc.under)
		if !ok || strings.Contains(rest, "/") {
			t.Errorf("key of mode %v limit %d = %q, want directly under %q", tc.mode, tc.limit, key, tc.under)
		}
		if got := keyLimit(pfx, key); got != tc.lim {
			t.Errorf("keyLimit(%q) = %d, want %d", key, got, tc.lim)
		}
		if got := isReader(pfx, key); got != (tc.mode == driver.Shared) {
			t.Errorf("isReader(%q) = %v", key, got)
		}
		writer := tc.mode == driver.Exclusive && tc.limit == 0
		if in := key >= pfx && key < writersEnd(pfx); in != writer {
			t.Errorf("%q in the writers' range: %v, want %v", key, in, writer)
		}
		ps, pe := permitsRange(pfx)
		if in := key >= ps && key < pe; in != (tc.limit > 0) {
			t.Errorf("%q in the permits' range: %v, want %v", key, in, tc.limit > 0)
		}
	}
	if strings.HasPrefix("app/jobs/s50/1-1", kindPrefix(pfx, driver.Exclusive, 5)) {
		t.Error("limit 5's prefix holds limit 50's keys")
	}
	err := mismatch("jobs", pfx, 5, "app/jobs/s3/1-1")
	if !errors.Is(err, driver.ErrInvalidArgument) || !strings.Contains(err.Error(), "limit = 5: want 3") {
		t.Errorf("mismatch error %q: want ErrInvalidArgument naming both limits", err)
	}
	t.Log(err)
	t.Log(mismatch("jobs", pfx, 0, "app/jobs/s3/1-1"))
	t.Log(mismatch("jobs", pfx, 2, "app/jobs/r/1-1"))
}

// TestRefusedRequests: requests the driver does not grant are refused
// before anything reaches etcd (the driver has no client here).
func TestRefusedRequests(t *testing.T) {
	d := newDriver(nil, nil, false)
	defer d.closeFn()
	for _, tc := range []struct {
		req  driver.Request
		want error
	}{
		{driver.Request{Name: "x", Limit: -1}, driver.ErrInvalidArgument},
		{driver.Request{Name: "x", Mode: driver.Mode(7)}, driver.ErrInvalidArgument},
		{driver.Request{Name: "x", Mode: driver.Shared, Limit: 2}, driver.ErrInvalidArgument},
		{driver.Request{Name: "x", Mode: driver.Shared, Value: "leader-1"}, driver.ErrInvalidArgument},
		{driver.Request{Name: "x", Limit: 2, Value: "leader-1"}, driver.ErrInvalidArgument},
	} {
		if _, _, err := d.Acquire(t.Context(), tc.req); !errors.Is(err, tc.want) {
			t.Errorf("Acquire(%+v) = %v, want %v", tc.req, err, tc.want)
		}
	}
}
