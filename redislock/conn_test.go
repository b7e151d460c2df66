package redislock

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testlog"
	"github.com/dlockio/dlock/internal/testserver"
)

const (
	connLost     = testlog.ConnLost
	connRestored = testlog.ConnRestored
)

// oneLossThenReturn returns the connection lines h recorded, failing t
// unless they are one loss, then one return.
func oneLossThenReturn(t *testing.T, h *testlog.Recorder) []string {
	t.Helper()
	lines := h.Matching(connLost, connRestored)
	t.Logf("%q", lines)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], connLost) || !strings.HasPrefix(lines[1], connRestored) {
		t.Fatalf("logged %q, want one loss, then one return", lines)
	}
	return lines
}

// TestConnectionLogged: with a logger, a single-node client logs the loss
// of its connection to a password-protected server and its return once
// each, with the node's address and the held-lock count, and never the
// password: for the server down (connections reset and refused) and for
// the waiters' pub/sub connection reset alone.
func TestConnectionLogged(t *testing.T) {
	secret := fmt.Sprintf("pw-%d-secret", time.Now().UnixNano())
	srv := testserver.StartRedis(t, "--requirepass", secret)
	for _, fault := range []string{"down", "pubsub"} {
		t.Run(fault, func(t *testing.T) {
			p, err := faultproxy.Start(srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), Password: secret})
			t.Cleanup(func() { rdb.Close() })
			h := testlog.New()
			c := newClient(t, rdb, dlock.WithTTL(6*time.Second), dlock.WithLogger(h.Logger()))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			name := uniqueName(t)
			l, err := c.Mutex(name).Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Unlock(ctx)
			// A waiter, so that the hub keeps a pub/sub connection.
			other := newClient(t, redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: secret}))
			held, err := other.Mutex(name + "/w").Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			go func() {
				l, err := c.Mutex(name + "/w").Lock(ctx)
				if err == nil {
					err = l.Unlock(ctx)
				}
				waited <- err
			}()
			waitFor(t, 10*time.Second, "the waiter's subscription", func() bool {
				return subscribed(ctx, other, name+"/w")
			})
			switch fault {
			case "down":
				undo := faultproxy.Apply([]*faultproxy.Proxy{p}, faultproxy.Any, drivertest.Fault{Down: true})
				h.Await(t, connLost, 1)
				undo()
			case "pubsub":
				if p.Reset(pubsubConn) == 0 {
					t.Fatal("no pub/sub connection to reset")
				}
			}
			h.Await(t, connRestored, 1)
			// Requests after the return: none may tell a change again.
			if err := held.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-waited; err != nil {
				t.Fatalf("the waiter: %v", err)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			lines := oneLossThenReturn(t, h)
			for _, line := range lines {
				if strings.Contains(line, secret) {
					t.Errorf("logged the password: %q", line)
				}
				for _, want := range []string{"dlock.driver=redis", "detail=" + p.Addr(), "dlock.held="} {
					if !strings.Contains(line, want) {
						t.Errorf("logged %q: want %q in it", line, want)
					}
				}
			}
			if !strings.Contains(lines[0], "dlock.held=1") {
				t.Errorf("logged %q: want dlock.held=1", lines[0])
			}
			if fault == "pubsub" && !strings.Contains(lines[0], "pub/sub connection dropped") {
				t.Errorf("logged %q: want the pub/sub connection named", lines[0])
			}
		})
	}
}

// subscribed reports whether some connection subscribes to name's
// release channel.
func subscribed(ctx context.Context, rdb *dlock.Client, name string) bool {
	st, err := rdb.Status(ctx, name)
	return err == nil && st.Waiters > 0
}

// TestRedlockConnectionLogged: with one Redlock node down, only that node
// is logged lost, then back, once each.
func TestRedlockConnectionLogged(t *testing.T) {
	addrs := testserver.Redis(t)[:3]
	var ps []*faultproxy.Proxy
	var nodes []redis.UniversalClient
	for _, a := range addrs {
		p, err := faultproxy.Start(a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		ps, nodes = append(ps, p), append(nodes, adminClient(t, p.Addr()))
	}
	h := testlog.New()
	c, err := NewRedlock(nodes, nil, dlock.WithTTL(6*time.Second), dlock.WithLogger(h.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := uniqueName(t)
	var ls []*dlock.Lease
	for i := range 2 {
		l, err := c.Mutex(fmt.Sprint(name, i)).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	undo := faultproxy.Apply(ps[1:2], faultproxy.Any, drivertest.Fault{Down: true})
	h.Await(t, connLost, 1)
	undo()
	h.Await(t, connRestored, 1)
	for _, l := range ls {
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	lines := oneLossThenReturn(t, h)
	for _, line := range lines {
		if !strings.Contains(line, "detail="+ps[1].Addr()) || !strings.Contains(line, "dlock.held=2") {
			t.Errorf("logged %q: want detail=%s and dlock.held=2", line, ps[1].Addr())
		}
	}
}

// BenchmarkConnWatch: an uncontended Lock+Unlock without a logger and with
// one (the connection hook on every request), to compare.
func BenchmarkConnWatch(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	for _, logged := range []bool{false, true} {
		b.Run(map[bool]string{false: "silent", true: "logger"}[logged], func(b *testing.B) {
			var opts []dlock.Option
			if logged {
				opts = append(opts, dlock.WithLogger(testlog.New().Logger()))
			}
			c, err := New(benchClient(b, addr), nil, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			m := c.Mutex("bench-connwatch")
			b.ReportAllocs()
			for b.Loop() {
				l, err := m.Lock(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
