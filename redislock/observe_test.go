package redislock

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

// Elections on a single node, beyond drivertest's Election suite: what only
// this driver's way of keeping and publishing the holder can get wrong.

// newDriverT is a single-node driver on rdb, closed at cleanup.
func newDriverT(t *testing.T, rdb redis.UniversalClient) *Driver {
	t.Helper()
	d, err := NewDriver(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// awaitHolder reads ch until it receives want; it fails the test if the
// channel closes or want does not come within timeout.
func awaitHolder(t *testing.T, ch <-chan driver.Holder, want driver.Holder, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(timeout)
	for {
		select {
		case h, ok := <-ch:
			if !ok {
				t.Fatalf("Observe's channel closed while waiting for %+v", want)
			}
			if h == want {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("Observe: %+v not received within %v", want, timeout)
		}
	}
}

// TestObserveExpiry: a leader whose key simply expires (its process died:
// nothing renews, releases or publishes) reaches an observer as nobody
// within about its TTL. Keyspace notifications are not used (they are off
// on this server, as by default): the observer reads again when the hold it
// read runs out.
func TestObserveExpiry(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	rdb := adminClient(t, addr)
	if v, err := rdb.ConfigGet(ctx, "notify-keyspace-events").Result(); err != nil || v["notify-keyspace-events"] != "" {
		t.Logf("notify-keyspace-events = %q (%v): not relied on", v["notify-keyspace-events"], err)
	}
	name := uniqueName(t)
	leader, obs := newDriverT(t, adminClient(t, addr)), newDriverT(t, adminClient(t, addr))
	const ttl = time.Second
	l, _, err := leader.Acquire(ctx, driver.Request{Name: name, TTL: ttl, Value: "crashed"})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := obs.Observe(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	awaitHolder(t, ch, driver.Holder{Token: l.Token(), Value: "crashed"}, 5*time.Second)
	// The leader's process "dies": the lock is never renewed or released.
	took := awaitHolder(t, ch, driver.Holder{}, ttl+2*time.Second)
	t.Logf("nobody observed %v after the leader's last grant (TTL %v)", took, ttl)
	if h, err := obs.Holder(ctx, name); err != nil || h != (driver.Holder{}) {
		t.Errorf("Holder after the expiry = %+v, %v; want nobody", h, err)
	}
}

// TestHandOverKeepsValue: a waiting candidate granted by the leader's
// release leads with its value from that release on, before its client has
// even heard of the grant: the release script writes the value it queued
// with.
func TestHandOverKeepsValue(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	// FIFO: under Barging (the default) a release within the bound (1 ms)
	// of b reaching the head leaves the lock free for a while instead of
	// handing it over, which is not the case under test.
	fifo := func() *Driver {
		d, err := NewDriver(adminClient(t, addr), &Options{Fairness: FIFO})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	a, b, o := fifo(), fifo(), fifo()
	la, _, err := a.Acquire(ctx, driver.Request{Name: name, TTL: 10 * time.Second, Value: "a"})
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	got := make(chan driver.Lock, 1)
	go func() {
		l, _, err := b.Acquire(bctx, driver.Request{Name: name, TTL: 10 * time.Second, Wait: true, Value: "b"})
		if err != nil {
			t.Errorf("b's Acquire: %v", err)
		}
		got <- l
	}()
	waitFor(t, 10*time.Second, "b queued", func() bool {
		st, err := o.Status(ctx, name)
		return err == nil && st.Waiters == 1
	})
	// b's client reads the grant only after its hub delivers it; keep the
	// hub from doing so until Holder has been read, by holding its lock.
	b.nodes[0].hub.mu.Lock()
	err = la.Release(ctx)
	h, herr := o.Holder(ctx, name)
	b.nodes[0].hub.mu.Unlock()
	if err != nil || herr != nil {
		t.Fatalf("Release: %v; Holder: %v", err, herr)
	}
	if h.Value != "b" || h.Token <= la.Token() {
		t.Errorf("Holder right after the release = %+v, want b's value and a term above %d", h, la.Token())
	}
	lb := <-got
	if lb == nil {
		return
	}
	if h.Token != lb.Token() {
		t.Errorf("Holder's term %d, b's grant %d", h.Token, lb.Token())
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := keysLeft(t, adminClient(t, addr), name); n != 0 {
		t.Errorf("%d keys but the fence counter left after the last release", n)
	}
}

// keysLeft counts name's keys other than its fence counter (which stays).
func keysLeft(t *testing.T, rdb *redis.Client, name string) int {
	t.Helper()
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	n, err := rdb.Exists(context.Background(), k.lock, k.queue, k.alive, k.shared, k.tokens, k.value, k.values).Result()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// TestObserveAcrossReconnect: a leader is elected unpublished (as while the
// observer's pub/sub connection is down: the test deletes the observers'
// marker so that the grant publishes nothing), then the observer's pub/sub
// connection is killed; the observer, resubscribed by go-redis, reads the
// holder again and reports the change, rather than at its next refresh
// (observeRefresh, longer than the test waits).
func TestObserveAcrossReconnect(t *testing.T) {
	addr := testserver.Redis(t)[0]
	ctx := context.Background()
	name := uniqueName(t)
	cname := strings.NewReplacer("/", "-", " ", "-").Replace(name)
	obsClient := redis.NewClient(&redis.Options{Addr: addr, ClientName: cname})
	t.Cleanup(func() { obsClient.Close() })
	a, o := newDriverT(t, adminClient(t, addr)), newDriverT(t, obsClient)
	ch, err := o.Observe(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	awaitHolder(t, ch, driver.Holder{}, 5*time.Second)
	admin := adminClient(t, addr)
	if err := admin.Del(ctx, o.keysOf(name).observed).Err(); err != nil {
		t.Fatal(err)
	}
	la, _, err := a.Acquire(ctx, driver.Request{Name: name, TTL: 30 * time.Second, Value: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer la.Release(ctx)
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+cname+" ") && !strings.Contains(line, " sub=0 ") {
			id := strings.TrimPrefix(strings.Fields(line)[0], "id=")
			if err := admin.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d pub/sub connections of the observer, want 1:\n%s", killed, list)
	}
	took := awaitHolder(t, ch, driver.Holder{Token: la.Token(), Value: "a"}, 10*time.Second)
	t.Logf("the unpublished leader observed %v after the observer's connection was killed", took)
}
