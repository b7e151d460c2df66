package redact

import (
	"net/url"
	"slices"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"file://", "file://"},
		{"redis://u:hunter2@host:6379/0", "redis://u:xxxxx@host:6379/0"},
		{"etcds://host?password=hunter2&x=1", "etcds://host?password=xxxxx&x=1"},
		{"zk://u:p%zz@host", "zk://xxxxx@host"}, // does not parse
		{"redis://host?auth=a b%", "redis://host?…"},
		{"no scheme at all %", "(a malformed URL)"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSecrets(t *testing.T) {
	u, err := url.Parse("redis://u:a%2Fb@host?token=t1&db=0")
	if err != nil {
		t.Fatal(err)
	}
	s := Secrets(u)
	for _, want := range []string{"a/b", "a%2Fb", "t1"} {
		if !slices.Contains(s, want) {
			t.Errorf("Secrets = %q, lacks %q", s, want)
		}
	}
	if slices.Contains(s, "0") {
		t.Errorf("Secrets = %q: db is no secret", s)
	}
}

func TestPassword(t *testing.T) {
	for _, tc := range []struct{ s, pw, want string }{
		{"dial redis://u:hunter2@h:1: hunter2 refused", "hunter2", "dial redis://u:xxxxx@h:1: xxxxx refused"},
		{"no password here", "", "no password here"},
		{"other text", "hunter2", "other text"},
	} {
		if got := Password(tc.s, tc.pw); got != tc.want {
			t.Errorf("Password(%q, %q) = %q, want %q", tc.s, tc.pw, got, tc.want)
		}
	}
}
