package redislock

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// The user closes their own go-redis client under a held lock or during a
// wait: the lease ends, the wait returns an error that says so at once, and
// nothing spins.

// cpuTime is the process's user+system CPU time.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// userClients returns go-redis clients to addrs that the test closes
// itself, and a dlock client over them (single node or Redlock).
func userClients(t *testing.T, addrs []string, opts ...dlock.Option) ([]*redis.Client, *dlock.Client) {
	t.Helper()
	var rdbs []*redis.Client
	var nodes []redis.UniversalClient
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		t.Cleanup(func() { c.Close() })
		rdbs, nodes = append(rdbs, c), append(nodes, c)
	}
	var c *dlock.Client
	var err error
	if len(nodes) == 1 {
		c, err = New(nodes[0], nil, opts...)
	} else {
		c, err = NewRedlock(nodes, nil, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return rdbs, c
}

func TestUserClosesClient(t *testing.T) {
	addrs := testserver.Redis(t)
	for _, tc := range []struct {
		name  string
		addrs []string
	}{{"single", addrs[:1]}, {"redlock", addrs}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			const ttl = 2 * time.Second

			t.Run("held", func(t *testing.T) {
				rdbs, c := userClients(t, tc.addrs, dlock.WithTTL(ttl))
				l, err := c.Mutex(uniqueName(t)).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				cpu0, t0 := cpuTime(t), time.Now()
				for _, r := range rdbs {
					r.Close()
				}
				select {
				case <-l.Done():
					t.Logf("lease ended %v after the client was closed: %v", time.Since(t0), l.Err())
				case <-time.After(ttl + time.Second):
					t.Fatalf("lease still held %v after its client was closed", ttl+time.Second)
				}
				if !errors.Is(l.Err(), dlock.ErrLockLost) {
					t.Errorf("lease ended with %v, want ErrLockLost", l.Err())
				}
				time.Sleep(time.Second) // what runs after the loss
				if cpu := cpuTime(t) - cpu0; cpu > time.Second {
					t.Errorf("%v of CPU in %v after the client was closed: something spins", cpu, time.Since(t0))
				}
			})

			t.Run("waiting", func(t *testing.T) {
				h := redlockOrSingle(t, tc.addrs, dlock.WithTTL(10*time.Second))
				name := uniqueName(t)
				lh, err := h.Mutex(name).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer lh.Unlock(ctx)
				rdbs, w := userClients(t, tc.addrs)
				wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
				got := lockAsync(wctx, w.Mutex(name))
				select {
				case r := <-got:
					t.Fatalf("waiter's Lock returned while the lock was held: %v", r.err)
				case <-time.After(500 * time.Millisecond):
				}
				cpu0, t0 := cpuTime(t), time.Now()
				for _, r := range rdbs {
					r.Close()
				}
				select {
				case r := <-got:
					if r.err == nil {
						r.l.Unlock(ctx)
						t.Fatal("waiter got the lock through a closed client")
					}
					t.Logf("waiter's Lock returned %v after its client was closed: %v", r.at.Sub(t0), r.err)
					if errors.Is(r.err, dlock.ErrUnavailable) || errors.Is(r.err, context.DeadlineExceeded) {
						t.Errorf("waiter's Lock = %v: a closed client will not come back", r.err)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("waiter's Lock still waiting 3 s after its client was closed")
				}
				if cpu := cpuTime(t) - cpu0; cpu > time.Second {
					t.Errorf("%v of CPU in %v after the client was closed: something spins", cpu, time.Since(t0))
				}
			})
		})
	}
}
