package zklock

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
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
