package etcdlock

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// countingWatcher counts the Watch calls made on a client.
type countingWatcher struct {
	clientv3.Watcher
	n atomic.Int64
}

func (w *countingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	w.n.Add(1)
	return w.Watcher.Watch(ctx, key, opts...)
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestOwnClientClosedUnderHeldLock: the user closes their own etcd client
// while a lock made with it is held. Nothing may spin on the closed client
// (every Watch on it returns a closed channel at once), and the lock is
// reported lost at once instead: it can no longer be renewed or released.
func TestOwnClientClosedUnderHeldLock(t *testing.T) {
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := newClient(t, eps)
	w := &countingWatcher{Watcher: cli.Watcher}
	cli.Watcher = w
	c, err := New(cli, nil, dlock.WithTTL(longTTL))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Mutex(benchName(t)).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for w.n.Load() < 1 { // the driver's loss watch
		time.Sleep(5 * time.Millisecond) // no event says the watch has started
	}

	cli.Close()
	watches, cpu := w.n.Load(), cpuTime(t)
	const span = 3 * time.Second
	select {
	case <-l.Done():
		t.Logf("lease ended: %v", l.Err())
		if !errors.Is(l.Err(), dlock.ErrLockLost) {
			t.Errorf("lease ended with %v, want ErrLockLost", l.Err())
		}
	case <-time.After(span):
		t.Errorf("lease still held %v after its etcd client was closed", span)
	}
	time.Sleep(span) // the spin, if there is one, runs meanwhile
	watches, cpu = w.n.Load()-watches, cpuTime(t)-cpu
	t.Logf("after the client closed: %d Watch calls, %v of CPU time", watches, cpu)
	if watches > 3 {
		t.Errorf("%d Watch calls on the closed client, want at most a few", watches)
	}
	// The whole test process, the race detector included; a spin takes
	// about a core.
	if cpu > span/3 {
		t.Errorf("%v of CPU time in %v after the client closed", cpu, span)
	}

	start := time.Now()
	if err := c.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with the etcd client closed", d)
	}
}

// TestOwnClientClosedUnderWait: a Lock waiting on a client whose etcd client
// the user closes returns at once, with an error that does not invite a
// retry (it is not ErrUnavailable: the client will not come back).
func TestOwnClientClosedUnderWait(t *testing.T) {
	eps := testserver.Etcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(t)
	a, err := New(newClient(t, eps), nil, dlock.WithTTL(longTTL))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	la, err := a.Mutex(name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Unlock(ctx)

	cli := newClient(t, eps)
	w := &countingWatcher{Watcher: cli.Watcher}
	cli.Watcher = w
	b, err := New(cli, nil, dlock.WithTTL(longTTL))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan error, 1)
	go func() {
		l, err := b.Mutex(name).Lock(ctx)
		if err == nil {
			l.Unlock(ctx)
		}
		got <- err
	}()
	for w.n.Load() < 1 { // the waiter watches its predecessor
		time.Sleep(5 * time.Millisecond)
	}
	cli.Close()
	start := time.Now()
	select {
	case err := <-got:
		t.Logf("Lock after its etcd client closed: %v (%v)", err, time.Since(start))
		if err == nil || errors.Is(err, dlock.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Lock after its etcd client closed: %v, want an error that is not ErrUnavailable", err)
		} else if msg := err.Error(); strings.Contains(msg, "%!") || !strings.Contains(msg, "client") {
			t.Errorf("Lock after its etcd client closed: %q, want a well-formed error that says the client closed", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Lock still waiting 5 s after its etcd client was closed")
	}
	if n := w.n.Load(); n > 3 {
		t.Errorf("%d Watch calls, want a few", n)
	}
}
