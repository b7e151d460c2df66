package zklock

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestURLErrorsHideCredentials: no error about a zk:// URL, malformed or
// unreachable, quotes its password (plain or percent-encoded).
func TestURLErrorsHideCredentials(t *testing.T) {
	const pw = "S3cr3tPw"
	for _, raw := range []string{
		"zk://user:" + pw + "@/root",
		"zk://user:" + pw + "@127.0.0.1:2181/root?session_timeout=soon",
		"zk://user:" + pw + "@127.0.0.1:2181/root?session_timeout=-1s",
		"zk://user:" + pw + "@127.0.0.1:2181/root?sessiontimeout=1s",
		"zk://user:" + pw + "@127.0.0.1:2181/a//b",
		"zk://user:" + pw + "@127.0.0.1:2181/a/../b",
		"zk://user:" + pw + "@127.0.0.1:2181/a%00b",
		"zk://user:" + pw + "@127.0.0.1:notaport/root",
		"zk://user:" + pw + "@127.0.0.1:2181,/root",
		"zk://user:" + pw + "@127.0.0.1:2181,,127.0.0.1:2182/root",
		"zk://user:" + pw + "@[::1/root",
		"zk://user:S3cr%2F3tPw@127.0.0.1:2181/root?session_timeout=x",
		"zk://user:" + pw + "%zz@127.0.0.1:2181/root",
		"zk://:" + pw + "@127.0.0.1:2181/root?session_timeout=x",
		"zk://user:" + pw + "@127.0.0.1:1/root", // nothing listens: Open times out
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := dlock.Open(ctx, raw)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("Open(%q) succeeded", raw)
			continue
		}
		t.Logf("%s\n\t-> %v", raw, err)
		if strings.Contains(err.Error(), "S3cr") {
			t.Errorf("Open(%q) error quotes the password: %v", raw, err)
		}
		if !errors.Is(err, dlock.ErrInvalidArgument) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Open(%q) = %v, want ErrInvalidArgument (or, unreachable, the context's deadline)", raw, err)
		}
	}
}

// TestURLCredentialsFromEnv: a zk:// URL without user info authenticates
// with DLOCK_ZK_USERNAME and DLOCK_ZK_PASSWORD, so the nodes it creates are
// that user's alone; user info in the URL takes precedence.
func TestURLCredentialsFromEnv(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := testAdmin(t, servers)
	t.Setenv(EnvUsername, "dlockenv")
	t.Setenv(EnvPassword, "envS3cr3t")
	for _, tc := range []struct{ userinfo, user, password string }{
		{"", "dlockenv", "envS3cr3t"},
		{"dlockurl:urlS3cr3t@", "dlockurl", "urlS3cr3t"},
	} {
		prefix := testRoot + "/auth-" + newGUID()[:8]
		c, err := dlock.Open(ctx, "zk://"+tc.userinfo+strings.Join(servers, ",")+prefix)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		l, err := c.Mutex("env").Lock(ctx)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		// The nodes are the test user's alone: read their ACL, and remove
		// them, as that user.
		owner, err := adminConn(servers)
		if err != nil {
			t.Fatal(err)
		}
		if err := owner.AddAuth("digest", []byte(tc.user+":"+tc.password)); err != nil {
			t.Fatal(err)
		}
		acl, _, err := owner.GetACL(prefix)
		if err != nil {
			t.Fatalf("ACL of %s: %v", prefix, err)
		}
		if want := zk.DigestACL(zk.PermAll, tc.user, tc.password); !reflect.DeepEqual(acl, want) {
			t.Errorf("ACL of %s = %v, want %v (user %s's alone)", prefix, acl, want, tc.user)
		}
		// Sync first: the admin's server may not have applied the create yet.
		if _, err := admin.Sync(prefix); err != nil {
			t.Fatalf("sync %s: %v", prefix, err)
		}
		if _, _, err := admin.Children(prefix); !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("list %s without the credentials: %v, want %v", prefix, err, zk.ErrNoAuth)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock: %v", err)
		}
		c.Close()
		kids, _, _ := owner.Children(prefix)
		for _, k := range kids {
			owner.Delete(prefix+"/"+k, -1)
		}
		if err := owner.Delete(prefix, -1); err != nil {
			t.Errorf("delete %s: %v", prefix, err)
		}
		owner.Close()
	}
}
