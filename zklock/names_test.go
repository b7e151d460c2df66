package zklock

import (
	"crypto/sha256"
	"encoding/hex"
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
