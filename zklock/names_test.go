package zklock

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

// TestNodeNames pins the node layout: a lock's parent is named as this
// package named it before internal/lockname was shared, so that locks
// taken by one version are seen by the next.
func TestNodeNames(t *testing.T) {
	hashed := func(name string) string {
		sum := sha256.Sum256([]byte(name))
		return "~" + hex.EncodeToString(sum[:])
	}
	for name, want := range map[string]string{
		"jobs/nightly":           "jobs%2Fnightly",
		"a%2Fb":                  "a%252Fb",
		"..":                     "%2E%2E",
		"a b\x00~":               "a%20b%00%7E",
		"Az09_-":                 "Az09_-",
		strings.Repeat("x", 200): strings.Repeat("x", 200),
		strings.Repeat("x", 201): hashed(strings.Repeat("x", 201)),
		strings.Repeat("/", 66):  strings.Repeat("%2F", 66),
		strings.Repeat("/", 67):  hashed(strings.Repeat("/", 67)),
	} {
		if got := encodeName(name); got != want {
			t.Errorf("encodeName(%q) = %q, want %q", name, got, want)
		}
	}
	if got, want := nodePrefix("0123456789abcdef0123456789abcdef"), "_c_0123456789abcdef0123456789abcdef-lock-"; got != want {
		t.Errorf("nodePrefix = %q, want %q", got, want)
	}
}

// TestMarkedNodeNames: readers' and permits' nodes have the mutex's shape,
// _c_<32 characters>-lock-<sequence>, which earlier versions parse (and so
// wait behind), and their marker reads back; a marker this version does
// not know reads as a writer, which blocks everyone rather than no one.
func TestMarkedNodeNames(t *testing.T) {
	earlier := regexp.MustCompile(`^_c_.{32}-lock-[0-9]+$`)
	for _, k := range []kind{{}, {shared: true}, {limit: 1}, {limit: 5}, {limit: maxLimit}} {
		name := nodePrefix(guidFor(k)) + "0000000042"
		if !earlier.MatchString(name) {
			t.Errorf("%v: node %q does not have the shape earlier versions parse", k, name)
		}
		e, ok := parseEntry(name)
		if !ok || e.kind != k || e.seq != 42 {
			t.Errorf("parseEntry(%q) = %+v, %v; want kind %+v, seq 42", name, e, ok, k)
		}
		if a, b := guidFor(k), guidFor(k); a == b {
			t.Errorf("%v: two guids alike: %q", k, a)
		}
	}
	for _, g := range []string{"__X" + strings.Repeat("0", 29), "__S0__" + strings.Repeat("0", 26), "__Sx__" + strings.Repeat("0", 26)} {
		if k := kindOf(g); k != (kind{}) {
			t.Errorf("kindOf(%q) = %+v, want a writer", g, k)
		}
	}
}
