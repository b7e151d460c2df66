package etcdlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestUnreachableBounded: with etcd unreachable (connections refused, or
// held without an answer), Release and Close return within their documented
// bounds whatever context they are given, and nothing the driver started
// outlives its Close.
func TestUnreachableBounded(t *testing.T) {
	eps := testserver.Etcd(t)
	for _, tc := range []struct {
		name  string
		fault drivertest.Fault
	}{
		{"Refused", drivertest.Fault{Down: true}},
		{"Stalled", drivertest.Fault{Stall: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := newConn(t, eps)
			if _, err := c.cli.Get(ctx, "warm-up"); err != nil {
				t.Fatal(err)
			}
			before := goleak.IgnoreCurrent()
			d, err := NewDriver(c.cli, &Options{Prefix: "dlocktest"})
			if err != nil {
				t.Fatal(err)
			}
			name := benchName(t)
			// Two TTLs, two leases; held locks under the loss watch.
			l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: longTTL, Wait: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := d.Acquire(ctx, driver.Request{Name: name + "/2", TTL: 2 * longTTL, Wait: true}); err != nil {
				t.Fatal(err)
			}
			<-d.watched // let the loss watch start

			// Each call under a fault of its own: bounded heals it after
			// 15 s to let a blocked call return.
			under := func(what string, limit time.Duration, f func() error) {
				t.Helper()
				undo, err := c.fault("", tc.fault)
				if err != nil {
					t.Fatal(err)
				}
				defer undo()
				bounded(t, what, limit, undo, f)
			}
			under("Release(context.Background())", releaseTimeout+time.Second, func() error { return l.Release(context.Background()) })
			under("driver Close", closeTimeout+time.Second, d.Close)
			c.cli.Close()
			for _, p := range c.proxies {
				p.Close()
			}
			goleak.VerifyNone(t, before)
		})
	}
}

// bounded runs f and fails the test if it takes longer than limit; after
// 15 s it heals the fault (undo) to let f return.
func bounded(t *testing.T, what string, limit time.Duration, undo func(), f func() error) {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		undo()
		err = <-done
		t.Errorf("%s still blocked 15 s into the outage; returned %v after the heal", what, time.Since(start))
	}
	took := time.Since(start)
	t.Logf("%s: %v after %v", what, err, took)
	if took > limit {
		t.Errorf("%s took %v with etcd unreachable, want at most %v", what, took, limit)
	}
	if err != nil && !errors.Is(err, driver.ErrUnavailable) && what != "driver Close" {
		t.Errorf("%s: %v, want an error matching ErrUnavailable", what, err)
	}
}
