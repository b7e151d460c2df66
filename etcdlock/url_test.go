package etcdlock

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

const (
	rootPassword   = "R00tPw-3c2f9a"
	lockerPassword = "L0ckerPw-81b7e4"
)

// authCluster starts a one-member etcd with authentication on: user root
// (rootPassword), and user locker (lockerPassword), who may read and write
// the keys under dlocktest/ and nothing else.
func authCluster(t *testing.T) []string {
	t.Helper()
	procs := testserver.StartEtcdCluster(t, 1)
	eps := []string{procs[0].Addr()}
	cli := newClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", rootPassword); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "locker"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "locker", "dlocktest/", clientv3.GetPrefixRangeEnd("dlocktest/"),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "locker", lockerPassword); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "locker", "locker"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("setting up auth, step %d: %v", i, err)
		}
	}
	return eps
}

// noSecret fails the test if err's text holds any of secrets (or a part of
// one a parser might have split off).
func noSecret(t *testing.T, what string, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, s := range secrets {
		for _, part := range append([]string{s}, strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune("/:@", r) })...) {
			if len(part) >= 4 && strings.Contains(msg, part) {
				t.Errorf("%s: error %q contains the secret %q", what, msg, part)
			}
		}
	}
}

// TestURLNeverLeaksPassword: malformed etcd:// URLs that carry a password
// are refused with an error that names the problem but not the password.
func TestURLNeverLeaksPassword(t *testing.T) {
	const pw = "S3cr3tPw"
	t.Setenv(EnvCACert, filepath.Join(t.TempDir(), "missing.pem"))
	for _, raw := range []string{
		"etcd://user:" + pw + "@",
		"etcd://user:" + pw + "@/prefix",
		"etcd://user:" + pw + "@h1,,h2/p",
		"etcd://user:" + pw + "@127.0.0.1:2379/p?dial_timeout=1s",
		"etcd://user:" + pw + "@127.0.0.1:2379/p#frag",
		"etcd://user:S3cr/3tPw@127.0.0.1:2379", // url.Parse's own error (dlock.Open reports it)
		"etcd://user:" + pw + "@[::1",
		"etcd://user:" + pw + "@h%zz",
		"etcd://user:" + pw + "@127.0.0.1:99999",
		"etcds://user:" + pw + "@127.0.0.1:1", // the CA file is missing
		"etcd://user:" + pw + "@127.0.0.1:1",  // nothing listens
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second) // for the unreachable ones
		c, err := dlock.Open(ctx, raw)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("Open(%q) succeeded", raw)
			continue
		}
		t.Logf("Open: %v", err)
		noSecret(t, "Open", err, pw, "S3cr/3tPw")
	}
}

// TestAuthFailureNeverLeaksPassword: a wrong password (in the URL or in the
// environment) fails Open with an error that does not quote it and is not
// marked transient; a right one opens.
func TestAuthFailureNeverLeaksPassword(t *testing.T) {
	eps := authCluster(t)
	const wrong = "Wr0ngPw-5d1c"
	host := eps[0]
	open := func(raw string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := dlock.Open(ctx, raw)
		if err == nil {
			defer c.Close()
			l, err := c.Mutex("auth").TryLock(ctx)
			if err != nil {
				return err
			}
			return l.Unlock(ctx)
		}
		return err
	}

	if err := open("etcd://locker:" + lockerPassword + "@" + host + "/dlocktest"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	err := open("etcd://locker:" + wrong + "@" + host + "/dlocktest")
	t.Logf("wrong password in the URL: %v", err)
	if err == nil {
		t.Fatal("wrong password in the URL: Open succeeded")
	}
	noSecret(t, "wrong password in the URL", err, wrong, lockerPassword)
	if errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("wrong password marked ErrUnavailable: %v", err)
	}

	t.Setenv(EnvUsername, "locker")
	t.Setenv(EnvPassword, wrong)
	err = open("etcd://" + host + "/dlocktest")
	t.Logf("wrong password in %s: %v", EnvPassword, err)
	if err == nil {
		t.Fatal("wrong password in the environment: Open succeeded")
	}
	noSecret(t, "wrong password in the environment", err, wrong)

	// Right password, a key range the user may not touch.
	t.Setenv(EnvPassword, lockerPassword)
	err = open("etcd://" + host + "/elsewhere")
	t.Logf("outside the user's keys: %v", err)
	if err == nil {
		t.Fatal("TryLock outside the user's keys succeeded")
	}
	noSecret(t, "outside the user's keys", err, lockerPassword)
	if errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("permission denied marked ErrUnavailable: %v", err)
	}
}

// TestOpenHonoursDeadline: Open gives up by its context's deadline, also
// while the etcd client authenticates (clientv3 would wait its own dial
// timeout).
func TestOpenHonoursDeadline(t *testing.T) {
	for _, raw := range []string{"etcd://127.0.0.1:1", "etcd://user:S3cr3tPw@127.0.0.1:1"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		start := time.Now()
		c, err := dlock.Open(ctx, raw)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("Open(%q) of nothing succeeded", raw)
		}
		took := time.Since(start)
		t.Logf("Open: %v after %v", err, took)
		if took > 2*time.Second {
			t.Errorf("Open(%q) with a 1 s deadline took %v", raw, took)
		}
	}
}

// TestConfigFromURL: what the URL opener makes of a URL and the
// environment, as the package doc's URLs section says.
func TestConfigFromURL(t *testing.T) {
	parse := func(raw string) (clientv3.Config, string) {
		t.Helper()
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		cfg, prefix, err := configFromURL(u)
		if err != nil {
			t.Fatalf("configFromURL(%q): %v", raw, err)
		}
		return cfg, prefix
	}
	t.Setenv(EnvUsername, "")
	t.Setenv(EnvUser, "")
	t.Setenv(EnvPassword, "")

	cfg, prefix := parse("etcd://h1,h2:2479/app/locks/")
	if want := []string{"http://h1:2379", "http://h2:2479"}; !slices.Equal(cfg.Endpoints, want) {
		t.Errorf("endpoints %q, want %q", cfg.Endpoints, want)
	}
	if prefix != "app/locks" || cfg.TLS != nil || cfg.Username != "" || cfg.DialTimeout != dialTimeout {
		t.Errorf("prefix %q, TLS %v, username %q, dial timeout %v", prefix, cfg.TLS != nil, cfg.Username, cfg.DialTimeout)
	}
	for raw, want := range map[string]string{"etcd://[::1]": "http://[::1]:2379", "etcd://[::1]:2579": "http://[::1]:2579"} {
		if cfg, _ := parse(raw); !slices.Equal(cfg.Endpoints, []string{want}) {
			t.Errorf("%s: endpoints %q, want %q", raw, cfg.Endpoints, want)
		}
	}
	if cfg, prefix := parse(TLSScheme + "://h1"); cfg.TLS == nil || cfg.Endpoints[0] != "https://h1:2379" || prefix != "" {
		t.Errorf("etcds: TLS %v, endpoints %q, prefix %q", cfg.TLS != nil, cfg.Endpoints, prefix)
	}

	t.Setenv(EnvUser, "old")
	if cfg, _ := parse("etcd://h1"); cfg.Username != "old" {
		t.Errorf("with only the deprecated %s set: username %q, want old", EnvUser, cfg.Username)
	}
	t.Setenv(EnvUsername, "new")
	t.Setenv(EnvPassword, "envpw")
	if cfg, _ := parse("etcd://h1"); cfg.Username != "new" || cfg.Password != "envpw" {
		t.Errorf("from the environment: %q/%q, want new/envpw", cfg.Username, cfg.Password)
	}
	if cfg, _ := parse("etcd://url:urlpw@h1"); cfg.Username != "url" || cfg.Password != "urlpw" {
		t.Errorf("URL user info over the environment: %q/%q, want url/urlpw", cfg.Username, cfg.Password)
	}

	for _, raw := range []string{"etcd:///p", "etcd://h1,,h2", "etcd://h1?prefix=x", "etcd://h1#x"} {
		u, _ := url.Parse(raw)
		if _, _, err := configFromURL(u); !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("configFromURL(%q) = %v, want ErrInvalidArgument", raw, err)
		}
	}
}
