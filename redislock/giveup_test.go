package redislock

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestReleaseToAWaiterThatGaveUp: a waiter B gives up while its requests
// are cut off, so its queue entry stays; the holder's release then picks
// that entry (single node: grants B the lock; Redlock: wakes B), and B's
// client, which left the release channel, hears nothing of it. Once B's
// client reaches the server again, the lock must go on to the next waiter
// C at once, not when the grant's TTL (30 s) or the holder's runs out:
// whether B's cut-off dequeue arrives late ("held") or was lost with its
// connection ("lost", the driver retries it). The conformance test
// CancelledWaitCleanupFails met this at load, where the release could
// overtake the held dequeue.
func TestReleaseToAWaiterThatGaveUp(t *testing.T) {
	for _, topo := range []string{"single", "redlock"} {
		for _, cut := range []string{"held", "lost"} {
			t.Run(topo+"/"+cut, func(t *testing.T) {
				// At load a Redlock release may skip B's entry (its alive
				// deadline passed while B was cut off) and wake C itself:
				// right, but not the case under test. Tried again then.
				for range 3 {
					if releaseToAWaiterThatGaveUp(t, topo == "redlock", cut == "lost") {
						return
					}
				}
				t.Fatal("in 3 attempts the release never picked B's entry: the case under test did not arise")
			})
		}
	}
}

// releaseToAWaiterThatGaveUp reports false if the case did not arise (see
// the caller).
func releaseToAWaiterThatGaveUp(t *testing.T, redlock, lost bool) bool {
	addrs := testserver.Redis(t)
	if !redlock {
		addrs = addrs[:1]
	}
	ctx := context.Background()
	ttl := dlock.WithTTL(30 * time.Second)
	var admins []*redis.Client
	var viaProxy []redis.UniversalClient
	var proxies []*faultproxy.Proxy
	for _, a := range addrs {
		admins = append(admins, adminClient(t, a))
		rdb, p := proxied(t, a)
		viaProxy, proxies = append(viaProxy, rdb), append(proxies, p)
	}
	var a, b, c *dlock.Client
	if redlock {
		a, c = redlockClient(t, addrs, ttl), redlockClient(t, addrs, ttl)
		var err error
		if b, err = NewRedlock(viaProxy, nil, ttl); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
	} else {
		a, c = newClient(t, adminClient(t, addrs[0]), ttl), newClient(t, adminClient(t, addrs[0]), ttl)
		b = newClient(t, viaProxy[0], ttl)
	}
	name := uniqueName(t)
	k := (&Driver{prefix: DefaultPrefix}).keysOf(name)
	waiters := func(n int) func() bool {
		return func() bool {
			st, err := a.Status(ctx, name)
			return err == nil && st.Waiters == n
		}
	}

	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	chB := lockAsync(bctx, b.Mutex(name))
	waitFor(t, 10*time.Second, "B to queue", waiters(1))

	// Cut B's requests, not its pub/sub connection: B's client leaves the
	// release channel, its dequeue does not get through.
	var undos []func()
	for _, p := range proxies {
		undos = append(undos, p.Add(faultproxy.Not(pubsubConn), faultproxy.Fault{Stall: true}))
	}
	undo := func() {
		for _, u := range undos {
			u()
		}
	}
	defer undo()
	bcancel()
	select {
	case r := <-chB:
		if r.err == nil {
			r.l.Unlock(ctx)
			t.Fatal("B's cancelled Lock succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("B's cancelled Lock did not return")
	}
	waitFor(t, 10*time.Second, "B's client to leave the release channel", func() bool {
		for _, ad := range admins {
			if ad.PubSubNumSub(ctx, k.channel).Val()[k.channel] != 0 {
				return false
			}
		}
		return true
	})
	chC := lockAsync(ctx, c.Mutex(name))
	waitFor(t, 10*time.Second, "C to queue behind B's entry", waiters(2))
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// The release picked B's entry: the case under test.
	st, err := a.Status(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if redlock && st.Held && st.Waiters == 1 {
		select {
		case r := <-chC:
			if r.err != nil {
				t.Fatalf("C: %v", r.err)
			}
			t.Logf("the release woke C, not B's entry (expired at load: %+v); again", st)
			if err := r.l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			return false
		case <-time.After(10 * time.Second):
			t.Fatalf("after the release: %+v, and C does not hold the lock", st)
		}
	}
	if st.Waiters != 1 || st.Held == redlock {
		t.Fatalf("after the release: %+v, want C waiting and the lock %s", st,
			map[bool]string{false: "granted to B's entry", true: "free (B's entry woken)"}[redlock])
	}
	if lost {
		for _, p := range proxies {
			p.Reset(faultproxy.Not(pubsubConn))
		}
	}
	healed := time.Now()
	undo()
	// The bound: B's driver retries a dequeue that failed within a second
	// (plus one request); far below the 30 s of a grant left to expire.
	const within = 5 * time.Second
	select {
	case r := <-chC:
		if r.err != nil {
			t.Fatalf("C: %v", r.err)
		}
		t.Logf("C holds %v after B's client could reach the servers again", r.at.Sub(healed))
		if err := r.l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	case <-time.After(within):
		t.Fatalf("C does not hold the lock %v after B's client could reach the servers again", within)
	}
	return true
}
