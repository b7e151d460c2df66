package filelock

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestFileName(t *testing.T) {
	seen := map[string]string{}
	for _, n := range []string{"a", "A", "a/b", "a%2Fb", "%", ".", "..", ".x", "h-", "~", "dlock-tokens", strings.Repeat("z", 300), "\x00"} {
		f := fileName(n)
		if len(f) > 255 || strings.ContainsAny(f, "/\x00") || strings.HasPrefix(f, ".") || f == tokensName {
			t.Errorf("fileName(%q) = %q: not a valid lock file name", n, f)
		}
		if prev, dup := seen[f]; dup {
			t.Errorf("fileName(%q) = fileName(%q) = %q", n, prev, f)
		}
		seen[f] = n
	}
}

// TestFileNameLayout pins the file names the package doc documents: every
// process sharing a directory must find the same file for the same lock.
func TestFileNameLayout(t *testing.T) {
	long := strings.Repeat("z", maxName+1)
	sum := sha256.Sum256([]byte(long))
	for name, want := range map[string]string{
		"job":                        "job.lock",
		"jobs/nightly":               "jobs%2Fnightly.lock",
		"a.b c":                      "a%2Eb%20c.lock",
		strings.Repeat("z", maxName): strings.Repeat("z", maxName) + ".lock",
		long:                         "~" + hex.EncodeToString(sum[:]) + ".lock",
	} {
		if got := fileName(name); got != want {
			t.Errorf("fileName(%q) = %q, want %q", name, got, want)
		}
	}
}
