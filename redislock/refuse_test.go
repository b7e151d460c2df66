package redislock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// Requests a driver must refuse rather than take a mutex for: a primitive
// its topology does not offer, a Mode or Limit out of range.

// TestRedlockMutexOnly: a Redlock refuses readers, permits and elections
// (a request with a Value, Holder, Observe) with ErrNotSupported, at the
// root and in the driver, and says so in its Capabilities; a single node
// says it offers all three, and refuses a Value with a shared request or a
// permit.
func TestRedlockMutexOnly(t *testing.T) {
	addrs := testserver.Redis(t)
	ctx := context.Background()
	name := uniqueName(t)
	c := redlockClient(t, addrs[:3])
	if caps := c.Capabilities(); caps.Shared || caps.Semaphore {
		t.Errorf("Redlock Capabilities Shared=%v Semaphore=%v, want false", caps.Shared, caps.Semaphore)
	}
	if _, err := c.RWMutex(name).RLock(ctx); !errors.Is(err, dlock.ErrNotSupported) {
		t.Errorf("Redlock RLock: %v, want ErrNotSupported", err)
	}
	if _, err := c.Semaphore(name, 3).TryAcquire(ctx); !errors.Is(err, dlock.ErrNotSupported) {
		t.Errorf("Redlock Semaphore.TryAcquire: %v, want ErrNotSupported", err)
	}
	var nodes []*Driver
	d, err := NewRedlockDriver(userNodes(t, addrs[:3]), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	nodes = append(nodes, d)
	for _, req := range []driver.Request{{Name: name, TTL: time.Second, Mode: driver.Shared}, {Name: name, TTL: time.Second, Limit: 2},
		{Name: name, TTL: time.Second, Value: "leader"}} {
		if l, _, err := nodes[0].Acquire(ctx, req); !errors.Is(err, driver.ErrNotSupported) {
			if l != nil {
				l.Release(ctx)
			}
			t.Errorf("Redlock driver Acquire(%+v): %v, want ErrNotSupported", req, err)
		}
	}
	if lk := lockKeysLeft(t, addrs[:3], name); lk != 0 {
		t.Errorf("%d lock keys left by refused requests", lk)
	}
	if caps := c.Capabilities(); caps.Election {
		t.Error("Redlock Capabilities Election = true")
	}
	if _, err := nodes[0].Holder(ctx, name); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("Redlock driver Holder: %v, want ErrNotSupported", err)
	}
	if _, err := nodes[0].Observe(ctx, name); !errors.Is(err, driver.ErrNotSupported) {
		t.Errorf("Redlock driver Observe: %v, want ErrNotSupported", err)
	}
	s := newClient(t, adminClient(t, addrs[0]))
	if caps := s.Capabilities(); !caps.Shared || !caps.Semaphore || !caps.Election {
		t.Errorf("single-node Capabilities Shared=%v Semaphore=%v Election=%v, want true, true, true", caps.Shared, caps.Semaphore, caps.Election)
	}
	sd, err := NewDriver(adminClient(t, addrs[0]), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()
	for _, req := range []driver.Request{{Name: name, TTL: time.Second, Mode: driver.Shared, Value: "v"},
		{Name: name, TTL: time.Second, Limit: 2, Value: "v"}} {
		if l, _, err := sd.Acquire(ctx, req); !errors.Is(err, driver.ErrInvalidArgument) {
			if l != nil {
				l.Release(ctx)
			}
			t.Errorf("single-node Acquire(%+v): %v, want ErrInvalidArgument", req, err)
		}
	}
}

// TestBadRequests: the driver refuses a Mode or Limit out of range, rather
// than take a mutex for it.
func TestBadRequests(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	d, err := NewDriver(adminClient(t, addr), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, req := range []driver.Request{
		{Mode: driver.Mode(7)},
		{Limit: -1},
		{Mode: driver.Shared, Limit: 3},
	} {
		req.Name, req.TTL = uniqueName(t), time.Second
		l, _, err := d.Acquire(ctx, req)
		if !errors.Is(err, driver.ErrInvalidArgument) {
			if l != nil {
				l.Release(ctx)
			}
			t.Errorf("Acquire(Mode %v, Limit %d): %v, want ErrInvalidArgument", req.Mode, req.Limit, err)
		}
	}
}

// userNodes returns go-redis clients of addrs, closed at cleanup.
func userNodes(t *testing.T, addrs []string) []redis.UniversalClient {
	var cs []redis.UniversalClient
	for _, a := range addrs {
		cs = append(cs, adminClient(t, a))
	}
	return cs
}
