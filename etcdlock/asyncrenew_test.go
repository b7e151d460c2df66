package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/faultproxy"
	"github.com/dlockio/dlock/internal/testserver"
)

// checkTxns follows a client's owner-check transactions (batch.go: range
// ops only, no compares) from the moment the client hands one to gRPC to
// its answer.
type checkTxns struct {
	mu       sync.Mutex
	inflight int           // keys in the owner-check transactions sent and not answered
	answered int           // owner-check transactions answered
	changed  chan struct{} // signalled when one is sent or answered
	sizes    []int         // keys of each owner-check transaction, in sending order
	// onSend, if set, is called with each owner-check transaction just
	// before it is sent.
	onSend atomic.Pointer[func(*etcdserverpb.TxnRequest)]
}

// proxiedClient makes a client that reaches endpoints through fault proxies
// of its own, with checks following its owner-check transactions; client
// and proxies are closed at cleanup.
func proxiedClient(t *testing.T, endpoints []string, checks *checkTxns) ([]*faultproxy.Proxy, *clientv3.Client) {
	t.Helper()
	var proxies []*faultproxy.Proxy
	var addrs []string
	for _, ep := range endpoints {
		p, err := faultproxy.Start(ep)
		if err != nil {
			t.Fatalf("fault proxy: %v", err)
		}
		t.Cleanup(func() { p.Close() }) // after the client's Close, registered below
		proxies = append(proxies, p)
		addrs = append(addrs, p.Addr())
	}
	return proxies, newClient(t, addrs, grpc.WithChainUnaryInterceptor(checks.unary))
}

func (c *checkTxns) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	keys := 0
	if t, ok := req.(*etcdserverpb.TxnRequest); ok && len(t.Compare) == 0 {
		for _, op := range t.Success {
			if op.GetRequestRange() == nil {
				keys = 0
				break
			}
			keys++
		}
	}
	if keys == 0 {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if f := c.onSend.Load(); f != nil {
		(*f)(req.(*etcdserverpb.TxnRequest))
	}
	c.mu.Lock()
	c.inflight += keys
	c.sizes = append(c.sizes, keys)
	c.mu.Unlock()
	c.signal()
	err := invoker(ctx, method, req, reply, cc, opts...)
	c.mu.Lock()
	c.inflight -= keys
	c.answered++
	c.mu.Unlock()
	c.signal()
	return err
}

func (c *checkTxns) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *checkTxns) state() (inflight, answered int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight, c.answered
}

// TestRenewalWaveCostsNoGoroutinePerLock: while a wave of renewals of many
// held locks is slowed at the engine (a delay on every connection between
// the client and etcd), the client spends no goroutine per lock on it: the
// locks renew by driver.AsyncRenewer, their shared keep-alive and owner
// checks answer by callbacks. The goroutines are counted while at least
// half of the locks' owner checks are known to be in flight (sent through
// the delay and not yet answered). The locks stay held.
func TestRenewalWaveCostsNoGoroutinePerLock(t *testing.T) {
	const (
		n     = 500
		ttl   = 10 * time.Second // renewal every 3.3 s, on a grid of 0.83 s
		delay = time.Second      // each way: a round trip takes 2 s
	)
	endpoints := testserver.Etcd(t)
	checks := &checkTxns{changed: make(chan struct{}, 1)}
	proxies, cli := proxiedClient(t, endpoints, checks)
	d, err := NewDriver(cli, &Options{Prefix: "dlocktest-wave"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dlock.NewClient(d, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	leases := make([]*dlock.Lease, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				l, err := c.Mutex(fmt.Sprintf("%s-%d", t.Name(), i)).Lock(ctx)
				if err != nil {
					errs <- err
					return
				}
				leases[i] = l
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Lock: %v", err)
	}
	defer func() {
		for _, l := range leases {
			if err := l.Unlock(ctx); err != nil {
				t.Errorf("Unlock: %v", err)
			}
		}
	}()
	base := runtime.NumGoroutine()

	var removes []func()
	for _, p := range proxies {
		removes = append(removes, p.Add(faultproxy.Any, faultproxy.Fault{Delay: delay}))
	}
	undo := func() {
		for _, r := range removes {
			r()
		}
		removes = nil
	}
	defer undo()

	// Sample while at least n/2 owner checks are in flight: no answer came
	// between the two looks at the transactions, so none came while the
	// goroutines were counted.
	timeout := time.After(4 * ttl)
	most := 0
	for {
		select {
		case <-checks.changed:
		case <-timeout:
			t.Fatalf("at most %d of %d owner checks in flight at once in %v", most, n, 4*ttl)
		}
		in, ans := checks.state()
		most = max(most, in)
		if in < n/2 {
			continue
		}
		g := runtime.NumGoroutine()
		if in2, ans2 := checks.state(); ans2 != ans || in2 < in {
			continue // an answer came meanwhile: sample the next wave
		}
		extra := g - base
		t.Logf("%d owner checks in flight: %d goroutines, %d more than while idle", in, g, extra)
		if extra > in/10 {
			t.Errorf("%d renewals in flight at the engine cost %d goroutines, want none per lock (at most %d)", in, extra, in/10)
		}
		break
	}
	undo()
	// The wave is answered and every lock is still held: renewed, not
	// lost.
	timeout = time.After(2 * releaseTimeout)
	for in, _ := checks.state(); in > 0; in, _ = checks.state() {
		select {
		case <-checks.changed:
		case <-timeout:
			t.Fatalf("%d owner checks unanswered %v after the delay was removed", in, 2*releaseTimeout)
		}
	}
	checks.mu.Lock()
	t.Logf("owner-check transactions sent, keys each: %v", checks.sizes)
	checks.mu.Unlock()
	for i, l := range leases {
		if err := l.Err(); err != nil {
			t.Errorf("lock %d lost during the slowed renewals: %v", i, err)
		}
	}
}

// TestRenewAsyncAnsweredAtClose: renewals in flight when the driver
// closes, waiting for their shared keep-alive or for their owner checks
// (the network stalled under the first request of that stage), are all
// answered, with ErrClosed, by the time Close returns: no done is left
// uncalled.
func TestRenewAsyncAnsweredAtClose(t *testing.T) {
	endpoints := testserver.Etcd(t)
	for _, stage := range []string{"keep-alive", "owner check"} {
		t.Run(stage, func(t *testing.T) {
			const m = 20
			checks := &checkTxns{changed: make(chan struct{}, 1)}
			proxies, cli := proxiedClient(t, endpoints, checks)
			d, err := NewDriver(cli, &Options{Prefix: "dlocktest-close"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			locks := make([]*lock, m)
			keys := map[string]bool{}
			for i := range locks {
				dl, _, err := d.Acquire(ctx, driver.Request{Name: benchName(t), TTL: longTTL})
				if err != nil {
					t.Fatal(err)
				}
				locks[i] = dl.(*lock)
				keys[locks[i].key] = true
			}
			stalled := make(chan struct{})
			stall := func() {
				for _, p := range proxies {
					p.Add(faultproxy.Any, faultproxy.Fault{Stall: true})
				}
				close(stalled)
			}
			if stage == "keep-alive" {
				stall()
			} else {
				var once sync.Once
				hook := func(req *etcdserverpb.TxnRequest) {
					for _, op := range req.Success {
						if keys[string(op.GetRequestRange().GetKey())] {
							once.Do(stall)
							return
						}
					}
				}
				checks.onSend.Store(&hook)
			}
			var mu sync.Mutex
			var errs []error
			for _, l := range locks {
				l.RenewAsync(ctx, func(_ driver.Validity, err error) {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				})
			}
			select {
			case <-stalled:
			case <-ctx.Done():
				t.Fatal("no owner check of the renewals was sent")
			}
			if err := d.Close(); err != nil {
				t.Logf("Close: %v", err) // the revocations stall too: the leases expire
			}
			mu.Lock()
			defer mu.Unlock()
			if len(errs) != m {
				t.Fatalf("%d of %d renewals in flight answered when Close returned", len(errs), m)
			}
			for _, err := range errs {
				if !errors.Is(err, driver.ErrClosed) {
					t.Errorf("renewal in flight at Close: %v, want ErrClosed", err)
				}
			}
			t.Logf("renewal in flight at Close: %v", errs[0])
		})
	}
}
