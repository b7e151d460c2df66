package redislock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

func uniqueName(t *testing.T) string {
	return fmt.Sprintf("%s/%d", t.Name(), time.Now().UnixNano())
}

// redlockClient returns a Redlock client over addrs with go-redis clients
// of its own; clients and client are closed at cleanup.
func redlockClient(t *testing.T, addrs []string, opts ...dlock.Option) *dlock.Client {
	t.Helper()
	var nodes []redis.UniversalClient
	for _, a := range addrs {
		nodes = append(nodes, redis.NewClient(&redis.Options{
			Addr: a, MaxRetries: -1, DialTimeout: time.Second, ContextTimeoutEnabled: true,
		}))
	}
	c, err := NewRedlock(nodes, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		for _, n := range nodes {
			n.Close()
		}
	})
	return c
}

func startNodes(t *testing.T, n int) ([]*testserver.Proc, []string) {
	procs := make([]*testserver.Proc, n)
	addrs := make([]string, n)
	for i := range procs {
		procs[i] = testserver.StartRedis(t)
		addrs[i] = procs[i].Addr()
	}
	return procs, addrs
}

// lockKeysLeft counts the lock keys of name still on the nodes.
func lockKeysLeft(t *testing.T, addrs []string, name string) int {
	t.Helper()
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	left := 0
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		n, err := c.Exists(context.Background(), k.lock).Result()
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		left += int(n)
	}
	return left
}

// TestRedlockMinorityDown: locks work with 2 of 5 nodes down; with 3 down,
// TryLock fails with an error that says why and Lock waits for its context;
// nothing is left behind when the nodes return.
func TestRedlockMinorityDown(t *testing.T) {
	procs, addrs := startNodes(t, 5)
	ctx := context.Background()
	ttl := dlock.WithTTL(2 * time.Second)
	a := redlockClient(t, addrs, ttl)
	b := redlockClient(t, addrs, ttl)
	name := uniqueName(t)

	procs[0].Stop()
	procs[1].Stop()
	var last uint64
	for i := range 3 {
		l, err := a.Mutex(name).Lock(ctx)
		if err != nil {
			t.Fatalf("Lock %d with 2 of 5 down: %v", i, err)
		}
		if l.Token() <= last {
			t.Fatalf("token %d after %d", l.Token(), last)
		}
		last = l.Token()
		if _, err := b.Mutex(name).TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("second TryLock with 2 of 5 down = %v, want ErrNotAcquired", err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock with 2 of 5 down: %v", err)
		}
	}

	procs[2].Stop()
	start := time.Now()
	_, err := a.Mutex(name).TryLock(ctx)
	if err == nil || errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock with 3 of 5 down = %v, want an error saying a majority is unreachable", err)
	}
	for _, w := range []string{name, "3 of 5 nodes unreachable", "majority of 3"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("TryLock with 3 of 5 down took %v", d)
	}
	// start before the deadline is set, so that it is no later than the
	// deadline's own origin (it was after, and a Lock that returned right
	// at the deadline measured 699.95 ms).
	start = time.Now()
	wctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	_, err = a.Mutex(name).Lock(wctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with 3 of 5 down = %v, want context.DeadlineExceeded (waiting for the majority)", err)
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 700*time.Millisecond+time.Second {
		t.Errorf("Lock with 3 of 5 down returned after %v, want at its context's deadline (700ms)", d)
	}

	for _, p := range procs[:3] {
		p.Start()
	}
	if n := lockKeysLeft(t, addrs, name); n != 0 {
		t.Errorf("%d lock keys left behind after the failed attempts", n)
	}
	l, err := b.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after the nodes returned: %v", err)
	}
	if l.Token() <= last {
		t.Errorf("token %d after %d", l.Token(), last)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRedlockNodeRestartedEmpty: one node losing its data (restart without
// persistence) does not let a second holder in while the first holds the
// rest, and the first keeps renewing.
func TestRedlockNodeRestartedEmpty(t *testing.T) {
	procs, addrs := startNodes(t, 5)
	ctx := context.Background()
	ttl := 900 * time.Millisecond
	a := redlockClient(t, addrs, dlock.WithTTL(ttl))
	b := redlockClient(t, addrs, dlock.WithTTL(ttl))
	name := uniqueName(t)

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	procs[0].Kill()
	procs[0].Start()
	if n := lockKeysLeft(t, addrs[:1], name); n != 0 {
		t.Fatalf("restarted node kept the key: not empty")
	}
	// Several TTLs: a's renewals must carry on with 4 of 5, and b must
	// never get in, whichever nodes it tries first.
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if lb, err := b.Mutex(name).TryLock(ctx); err == nil {
			lb.Unlock(ctx)
			t.Fatal("second holder granted while the first held 4 of 5 nodes")
		} else if !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryLock: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // spacing the probes; not a synchronisation
	}
	select {
	case <-la.Done():
		t.Fatalf("first holder lost the lock: %v", la.Err())
	default:
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Mutex(name).TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock after release: %v", err)
	}
	if lb.Token() <= la.Token() {
		t.Errorf("token %d after %d", lb.Token(), la.Token())
	}
	lb.Unlock(ctx)
}

// TestWrongTypeKey: a key of another type at the lock's name is a clear
// error naming the lock, at once, not a wait.
func TestWrongTypeKey(t *testing.T) {
	addr := testserver.Redis(t)[0]
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	c, err := New(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	for _, setup := range []struct {
		what string
		make func(key string) error
	}{
		{"hash", func(k string) error { return rdb.HSet(ctx, k, "f", "v").Err() }},
		{"string without TTL", func(k string) error { return rdb.Set(ctx, k, "x", 0).Err() }},
	} {
		name := uniqueName(t) + "/" + setup.what
		key := (&Driver{prefix: DefaultPrefix}).keysOf(name).lock
		if err := setup.make(key); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Del(ctx, key) })
		for _, op := range []string{"TryLock", "Lock"} {
			start := time.Now()
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			if op == "Lock" {
				_, err = c.Mutex(name).Lock(wctx)
			} else {
				_, err = c.Mutex(name).TryLock(wctx)
			}
			cancel()
			if err == nil || errors.Is(err, dlock.ErrNotAcquired) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s %s over a %s: %v, want an engine error", op, name, setup.what, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) || !strings.Contains(err.Error(), key) {
				t.Errorf("%s: error %q names neither the lock nor the key", op, err)
			}
			if time.Since(start) > time.Second {
				t.Errorf("%s over a %s took %v", op, setup.what, time.Since(start))
			}
			t.Logf("%s over a %s: %v", op, setup.what, err)
		}
	}
}

// TestOpenURL: good URLs open; a wrong password, a wrong database and an
// unreachable server are clear errors within seconds, and the password
// never shows.
func TestOpenURL(t *testing.T) {
	p := testserver.StartRedis(t)
	ctx := context.Background()
	const pw = "s3cret-pw"
	admin := redis.NewClient(&redis.Options{Addr: p.Addr()})
	if err := admin.ConfigSet(ctx, "requirepass", pw).Err(); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	shared := testserver.Redis(t)

	good := []string{
		"redis://:" + pw + "@" + p.Addr() + "/0",
		"redis://:" + pw + "@" + p.Addr() + "/3?prefix=app:",
		"redlock://" + strings.Join(shared, ","),
	}
	for _, u := range good {
		c, err := dlock.Open(ctx, u)
		if err != nil {
			t.Fatalf("Open(%s): %v", u, err)
		}
		l, err := c.Mutex(uniqueName(t)).TryLock(ctx)
		if err != nil {
			t.Fatalf("TryLock via %s: %v", u, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}

	t.Setenv(EnvPassword, pw)
	c, err := dlock.Open(ctx, "redis://"+p.Addr())
	if err != nil {
		t.Fatalf("Open with the password from $%s: %v", EnvPassword, err)
	}
	c.Close()
	t.Setenv(EnvPassword, "")
	// The name read before DLOCK_REDIS_PASSWORD still works, when that is
	// unset or empty.
	t.Setenv(envPasswordDeprecated, pw)
	c, err = dlock.Open(ctx, "redis://"+p.Addr())
	if err != nil {
		t.Fatalf("Open with the password from $%s: %v", envPasswordDeprecated, err)
	}
	c.Close()
	t.Setenv(envPasswordDeprecated, "")

	bad := []struct{ url, want string }{
		{"redis://:wrong-pw@" + p.Addr() + "/0", "authentication failed"},
		{"redis://" + p.Addr() + "/0", "NOAUTH"},
		{"redis://:" + pw + "@" + p.Addr() + "/99", "no such database"},
		{"redis://127.0.0.1:1/0", "refused"},
		{"redlock://127.0.0.1:1,127.0.0.1:2", "at least 3"},
		{"redis://" + shared[0] + "/0?prefix=a{b", "prefix"},
	}
	for _, tc := range bad {
		start := time.Now()
		c, err := dlock.Open(ctx, tc.url)
		if err == nil {
			c.Close()
			t.Errorf("Open(%s) succeeded", tc.url)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s) = %q, want it to mention %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "wrong-pw") || strings.Contains(err.Error(), pw) {
			t.Errorf("Open(%s): error shows the password: %q", tc.url, err)
		}
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("Open(%s) took %v", tc.url, d)
		}
	}
}
