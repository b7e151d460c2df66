package etcdlock

import "testing"

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
