package lockname

import (
	"strings"
	"testing"
)

func TestEscapeIsInjectiveAndSafe(t *testing.T) {
	names := []string{"", "a", "A", "a/b", "a%2Fb", "a_b", "a-b", "a b", "a/", "/a", " ", "/", "//", ".", "..",
		"{x}", "~x", "日本語/ロック", "\x00", "a\x00b", "\xff\xfe", "tab\there", "new\nline",
		strings.Repeat("x", 300), strings.Repeat("x", 299) + "y", strings.Repeat("é", 100)}
	seen := map[string]string{}
	for _, n := range names {
		for _, max := range []int{0, 200} {
			e := Escape(n, max)
			if max > 0 && len(e) > max {
				t.Errorf("Escape(%q, %d) = %d bytes", n, max, len(e))
			}
			if strings.ContainsAny(e, "/.{} \x00\n\t") || e == "." || e == ".." {
				t.Errorf("Escape(%q) = %q holds a byte an engine may not take", n, e)
			}
			if max == 0 {
				if prev, dup := seen[e]; dup && prev != n {
					t.Errorf("%q and %q both escape to %q", prev, n, e)
				}
				seen[e] = n
			}
		}
	}
	if got := Escape("a/b", 0); got != "a%2Fb" {
		t.Errorf("Escape(a/b) = %q", got)
	}
	if got := Escape(strings.Repeat("x", 201), 200); !strings.HasPrefix(got, "~") || len(got) != 65 {
		t.Errorf("a long name = %q, want ~ and a SHA-256", got)
	}
	if Escape(strings.Repeat("x", 201), 200) == Escape(strings.Repeat("x", 202), 200) {
		t.Error("two long names hash alike")
	}
}

func FuzzEscape(f *testing.F) {
	f.Add("a/b", "a%2Fb")
	f.Fuzz(func(t *testing.T, a, b string) {
		if a != b && Escape(a, 0) == Escape(b, 0) {
			t.Fatalf("%q and %q escape alike", a, b)
		}
	})
}

// TestUnescape: Unescape inverts Escape, refuses the hashed form and what
// Escape cannot make, and an escaped prefix is a prefix of the escaped name
// (which lets a driver list by prefix).
func TestUnescape(t *testing.T) {
	for _, name := range []string{"a", "jobs/nightly", "with space", "ü/%2F", "\x00\xff", "~x", "a.b"} {
		got, ok := Unescape(Escape(name, 0))
		if !ok || got != name {
			t.Errorf("Unescape(Escape(%q)) = %q, %v", name, got, ok)
		}
	}
	for _, s := range []string{"", "~" + Escape("x", 0), "a%2", "a%2f", "a%41", "a/b", "%zz"} {
		if got, ok := Unescape(s); ok {
			t.Errorf("Unescape(%q) = %q, true; want false", s, got)
		}
	}
	if _, ok := Unescape(Escape(string(make([]byte, 300)), 200)); ok {
		t.Errorf("Unescape of a hashed name succeeded")
	}
}

func FuzzUnescape(f *testing.F) {
	f.Add("jobs/a", "jobs/")
	f.Fuzz(func(t *testing.T, name, prefix string) {
		if name == "" {
			return // lock names are never empty
		}
		got, ok := Unescape(Escape(name, 0))
		if !ok || got != name {
			t.Fatalf("Unescape(Escape(%q)) = %q, %v", name, got, ok)
		}
		has := len(name) >= len(prefix) && name[:len(prefix)] == prefix
		en, ep := Escape(name, 0), Escape(prefix, 0)
		if esc := len(en) >= len(ep) && en[:len(ep)] == ep; esc != has {
			t.Fatalf("prefix %q of %q: escaped prefix test %v, want %v", prefix, name, esc, has)
		}
	})
}
