package redislock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestBatchedRedlockRelease: n Redlock releases made together cost a few
// scripts per node, not n, and each is owner-checked and answered on its
// own: a lock taken by someone else on a majority is reported lost (and
// its value marked given up, so a straggling attempt cannot take it), a
// lock whose waiter queue is a key of another type fails alone, a lock
// with a queued waiter wakes it, and every other lock's key is gone.
func TestBatchedRedlockRelease(t *testing.T) {
	addrs := testserver.Redis(t)[:3]
	ctx := context.Background()
	counts := make([]*commandCounter, len(addrs))
	var nodes []redis.UniversalClient
	for i, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		counts[i] = &commandCounter{}
		c.AddHook(counts[i])
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	d, err := NewRedlockDriver(nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const n = 200
	prefix := uniqueName(t)
	names := make([]string, n)
	locks := make([]driver.Lock, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s/%d", prefix, i)
		l, _, err := d.Acquire(ctx, driver.Request{Name: names[i], TTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		locks[i] = l
	}
	const lost, broken, waited = 3, 5, 7
	const waiter = "a-waiter"
	admins := make([]*redis.Client, len(addrs))
	for i, a := range addrs {
		admins[i] = adminClient(t, a)
	}
	for _, a := range admins[:2] {
		if err := a.Set(ctx, d.keysOf(names[lost]).lock, "someone-else", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range admins {
		if err := a.Set(ctx, d.keysOf(names[broken]).queue, "not a sorted set", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	kw := d.keysOf(names[waited])
	sub := admins[0].Subscribe(ctx, kw.channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range admins {
		if err := a.ZAdd(ctx, kw.queue, redis.Z{Score: 1, Member: waiter}).Err(); err != nil {
			t.Fatal(err)
		}
		if err := a.ZAdd(ctx, kw.alive, redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: waiter}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	before := make([]int64, len(counts))
	for i, c := range counts {
		before[i] = c.n.Load()
	}
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range locks {
		wg.Go(func() {
			<-start
			errs[i] = l.Release(ctx)
		})
	}
	close(start)
	wg.Wait()
	for i, c := range counts {
		sent := c.n.Load() - before[i]
		t.Logf("%d releases: node %d was sent %d commands", n, i, sent)
		if sent > n/10 {
			t.Errorf("%d releases made together sent %d commands to node %d, want a few (≤ %d)", n, sent, i, n/10)
		}
	}
	for i, err := range errs {
		switch i {
		case lost:
			if !errors.Is(err, driver.ErrLockLost) {
				t.Errorf("Release of the lock taken by someone else: %v, want ErrLockLost", err)
			}
		case broken:
			if err == nil || errors.Is(err, driver.ErrLockLost) {
				t.Errorf("Release of the lock whose queue is a string: %v, want an error, not ErrLockLost", err)
			}
		default:
			if err != nil {
				t.Errorf("Release %d: %v", i, err)
			}
		}
	}
	value := locks[lost].(*redlockLock).value
	for j, a := range admins {
		for i, name := range names {
			if i == lost || i == broken {
				continue
			}
			if v := a.Exists(ctx, d.keysOf(name).lock).Val(); v != 0 {
				t.Errorf("node %d: lock %d's key is still there after its release", j, i)
			}
		}
		if j < 2 {
			if got := a.Get(ctx, d.keysOf(names[lost]).lock).Val(); got != "someone-else" {
				t.Errorf("node %d: the other owner's key holds %q after the lost lock's release", j, got)
			}
			if _, err := a.ZScore(ctx, d.keysOf(names[lost]).gone, value).Result(); err != nil {
				t.Errorf("node %d: the lost lock's value is not marked given up: %v", j, err)
			}
		}
	}
	msgCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := sub.ReceiveMessage(msgCtx)
	if err != nil {
		t.Fatalf("the queued waiter was not woken: %v", err)
	}
	if msg.Payload != waiter {
		t.Errorf("release woke %q, want %q", msg.Payload, waiter)
	}
	// A repeat is safe, and reports the release it repeats: the release
	// left its note (VALUE:r) for a copy sent again after a lost reply,
	// which a repeat cannot be told from.
	if err := locks[0].Release(ctx); err != nil {
		t.Errorf("second Release: %v, want nil (the first one released)", err)
	}
	if got := admins[0].Get(ctx, d.keysOf(names[lost]).lock).Val(); got != "someone-else" {
		t.Errorf("the other owner's key holds %q after a repeated release", got)
	}
}
