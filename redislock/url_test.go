package redislock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// openEnv, when set to a URL, makes the test binary open it, take and give
// back a lock a few times and print the client's notes (see TestMain), so
// that a test can see everything the process writes to stderr.
const openEnv = "DLOCK_REDISLOCK_OPEN"

func openMain() int {
	ctx := context.Background()
	c, err := dlock.Open(ctx, os.Getenv(openEnv), dlock.WithTTL(2*time.Second))
	if err != nil {
		fmt.Println("open error:", err)
		return 1
	}
	defer c.Close()
	for i := range 3 {
		l, err := c.Mutex(fmt.Sprintf("openMain/%d", time.Now().UnixNano())).TryLock(ctx)
		if err != nil {
			fmt.Println("trylock error:", i, err)
			return 1
		}
		if err := l.Unlock(ctx); err != nil {
			fmt.Println("unlock error:", i, err)
			return 1
		}
	}
	fmt.Println("notes:", c.Capabilities().Notes)
	return 0
}

// runOpen runs openMain in a child process on url and returns its stdout
// and stderr.
func runOpen(t *testing.T, url string) (stdout, stderr string, err error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), openEnv+"="+url)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestRedlockOpenWithNodeDown: a Redlock whose minority of nodes is down
// opens, works, names the missing node in its notes, and prints nothing:
// go-redis's pool would report every failed dial through its process-wide
// logger (stderr).
func TestRedlockOpenWithNodeDown(t *testing.T) {
	shared := testserver.Redis(t)
	down := testserver.StartRedis(t)
	down.Stop()
	url := "redlock://" + strings.Join([]string{shared[0], shared[1], down.Addr()}, ",")
	stdout, stderr, err := runOpen(t, url)
	t.Logf("stdout: %s", stdout)
	if err != nil {
		t.Errorf("Open/TryLock with 1 of 3 nodes down: %v: %s", err, stdout)
	}
	if stderr != "" {
		t.Errorf("the process wrote to stderr: %q", stderr)
	}
	if !strings.Contains(stdout, "unreachable when opened: "+down.Addr()) {
		t.Errorf("notes do not name the missing node %s: %s", down.Addr(), stdout)
	}

	// A majority down: Open fails, saying so, and the error may pass.
	ctx := context.Background()
	c, err := dlock.Open(ctx, "redlock://"+strings.Join([]string{shared[0], down.Addr(), "127.0.0.1:1"}, ","))
	if err == nil {
		c.Close()
		t.Fatal("Open with 2 of 3 nodes down succeeded")
	}
	if !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "2 of 3 nodes unreachable") {
		t.Errorf("Open with 2 of 3 nodes down = %v, want an error matching ErrUnavailable that says a majority is missing", err)
	}
	// A node that refuses the client will not pass: no majority rule.
	locked := testserver.StartRedis(t, "--requirepass", "other-pw")
	c, err = dlock.Open(ctx, "redlock://"+strings.Join([]string{shared[0], shared[1], locked.Addr()}, ","))
	if err == nil {
		c.Close()
		t.Fatal("Open with a node that wants a password succeeded")
	}
	if errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("Open with a node that wants a password = %v, want its NOAUTH, not ErrUnavailable", err)
	}
}

// TestOpenURLCredentials: malformed and failing URLs of every scheme that
// carry a password never show it in an error, whether the error is this
// package's, go-redis's or the server's.
func TestOpenURLCredentials(t *testing.T) {
	shared := testserver.Redis(t)
	locked := testserver.StartRedis(t, "--requirepass", "right-pw")
	const pw = "S3cr3tPw"
	urls := []string{
		"redis://:" + pw + "/x@127.0.0.1:6379/0",
		"redis://:" + pw + "@127.0.0.1:notaport/0",
		"redis://:" + pw + "@127.0.0.1:6379/notadb",
		"redis://user:" + pw + "@127.0.0.1:6379/0?dial_timeout=bogus",
		"redis://:" + pw + "@127.0.0.1:6379/0?no_such_option=1",
		"redis://:S3cr%33tPw@127.0.0.1:6379/0?no_such_option=1",
		"redis://:" + pw + "@" + shared[0] + "/0?prefix=a{b",
		"redis://:" + pw + "@127.0.0.1:1/0",
		"redis://:" + pw + "@" + locked.Addr() + "/0",
		"redis://user:" + pw + "@" + locked.Addr() + "/0",
		"rediss://:" + pw + "@[::1/0",
		"rediss://:" + pw + "@127.0.0.1:1/0?dial_timeout=1s",
		"redlock://:" + pw + "@127.0.0.1:1,127.0.0.1:2",
		"redlock://:" + pw + "@h1:1,h2,h3:3",
		"redlock://:" + pw + "@127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/x",
		"redlock://:" + pw + "@127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
		"redlock://:" + pw + "@" + strings.Join([]string{locked.Addr(), shared[0], shared[1]}, ","),
		"redlock://:" + pw + "@" + strings.Join([]string{locked.Addr(), locked.Addr(), locked.Addr()}, ","),
	}
	ctx := context.Background()
	for _, u := range urls {
		c, err := dlock.Open(ctx, u)
		if err == nil {
			c.Close()
			t.Errorf("Open(%q) succeeded", u)
			continue
		}
		if s := err.Error(); strings.Contains(s, pw) || strings.Contains(s, "S3cr") || strings.Contains(s, "3tPw") {
			t.Errorf("Open(%q): the error shows the password: %q", u, s)
		}
		t.Logf("%s\n\t-> %v", u, err)
	}
	// And go-redis's own errors, from a client the user made.
	rdb := redis.NewClient(&redis.Options{Addr: locked.Addr(), Password: pw})
	defer rdb.Close()
	c, err := New(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Mutex(uniqueName(t)).TryLock(ctx)
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("TryLock with a wrong password: %v", err)
	}
	t.Logf("TryLock with a wrong password: %v", err)
}
