package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestTransientErrorsMarked: errors that may pass are marked
// driver.ErrUnavailable (the portable layer retries a blocking Lock on
// them): a connection lost under a request, and a cluster without quorum.
func TestTransientErrorsMarked(t *testing.T) {
	t.Run("ConnectionLostUnderRequest", func(t *testing.T) {
		eps := testserver.Etcd(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := newConn(t, eps)
		d := mustDriver(t, c.cli)
		name := benchName(t)
		l, _, err := d.Acquire(ctx, driver.Request{Name: name + "/warm-up", TTL: longTTL})
		if err != nil { // the lease exists from here on
			t.Fatal(err)
		}
		defer l.Release(ctx)

		// The request leaves the client and is held; then the connection
		// is reset under it.
		stall, err := c.fault("", drivertest.Fault{Stall: true})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			l, _, err := d.Acquire(ctx, driver.Request{Name: name, TTL: longTTL})
			if err == nil {
				l.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(time.Second) // nothing tells when the request has reached the proxy
		down, err := c.fault("", drivertest.Fault{Down: true})
		if err != nil {
			t.Fatal(err)
		}
		stall()
		err = <-got
		down()
		t.Logf("TryLock with its connection reset: %v", err)
		if !errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("TryLock with its connection reset: %v, want an error matching ErrUnavailable", err)
		}
	})

	t.Run("NoQuorum", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a 3-member cluster")
		}
		procs := testserver.StartEtcdCluster(t, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Two drivers on the member that stays up: one has its lease, the
		// other will have to grant one.
		withLease := mustDriver(t, newClient(t, []string{procs[0].Addr()}))
		noLease := mustDriver(t, newClient(t, []string{procs[0].Addr()}))
		name := benchName(t)
		l, _, err := withLease.Acquire(ctx, driver.Request{Name: name + "/warm-up", TTL: longTTL})
		if err != nil {
			t.Fatal(err)
		}
		_ = l
		procs[1].Stop()
		procs[2].Stop()
		for _, tc := range []struct {
			what string
			d    driver.Driver
		}{{"TryLock", withLease}, {"TryLock granting a lease", noLease}} {
			start := time.Now()
			actx, acancel := context.WithTimeout(ctx, 30*time.Second)
			l, _, err := tc.d.Acquire(actx, driver.Request{Name: name, TTL: longTTL})
			acancel()
			if err == nil {
				l.Release(ctx)
			}
			t.Logf("%s without quorum: %v (after %v)", tc.what, err, time.Since(start))
			if !errors.Is(err, driver.ErrUnavailable) {
				t.Errorf("%s without quorum: %v, want an error matching ErrUnavailable", tc.what, err)
			}
		}
	})
}

// TestPermanentErrorsNotMarked: errors a retry cannot cure are reported as
// they are, not marked ErrUnavailable: a key range the user may not write,
// a closed etcd client.
func TestPermanentErrorsNotMarked(t *testing.T) {
	eps := authCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, Username: "locker", Password: lockerPassword,
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	d, err := NewDriver(cli, &Options{Prefix: "not-granted"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, wait := range []bool{false, true} {
		l, _, err := d.Acquire(ctx, driver.Request{Name: "x", TTL: longTTL, Wait: wait})
		if err == nil {
			l.Release(ctx)
			t.Fatal("Acquire outside the user's key range succeeded")
		}
		t.Logf("Acquire (wait %v) outside the user's key range: %v", wait, err)
		if errors.Is(err, driver.ErrUnavailable) {
			t.Errorf("permission denied marked ErrUnavailable: %v", err)
		}
	}
}

// TestEngineErrClasses: which etcd errors are marked transient, for the
// ones no test above can make a server produce on demand.
func TestEngineErrClasses(t *testing.T) {
	// engineErr reads only the client's Ctx.
	d := &Driver{cli: clientv3.NewCtxClient(context.Background()), closeCtx: context.Background()}
	live := context.Background()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err       error
		ctx       context.Context
		transient bool
	}{
		{rpctypes.ErrNoLeader, live, true},
		{rpctypes.ErrLeaderChanged, live, true},
		{rpctypes.ErrTimeout, live, true},
		{rpctypes.ErrTimeoutDueToLeaderFail, live, true},
		{rpctypes.ErrTimeoutDueToConnectionLost, live, true},
		{rpctypes.ErrStopped, live, true},
		{rpctypes.ErrUnhealthy, live, true},
		{rpctypes.ErrTooManyRequests, live, true},
		{rpctypes.ErrNotLeader, live, true},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), live, true},
		{fmt.Errorf("etcdlock: grant lease: %w", context.DeadlineExceeded), live, true},
		{rpctypes.ErrPermissionDenied, live, false},
		{rpctypes.ErrAuthFailed, live, false},
		{rpctypes.ErrInvalidAuthToken, live, false},
		{rpctypes.ErrNoSpace, live, false},
		{rpctypes.ErrRequestTooLarge, live, false},
		{rpctypes.ErrLeaseTTLTooLarge, live, false},
		{errors.New("some other error"), live, false},
		{context.Canceled, ended, false},
		{rpctypes.ErrTimeout, ended, false}, // the caller gave up: not for the portable layer to retry
	} {
		got := errors.Is(d.engineErr(tc.ctx, tc.err), driver.ErrUnavailable)
		if got != tc.transient {
			t.Errorf("%v (caller's ctx ended: %v): marked transient = %v, want %v", tc.err, tc.ctx.Err() != nil, got, tc.transient)
		}
	}
}
