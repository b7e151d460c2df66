package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// deleteEvents counts the delete events a client receives on its watch
// streams for keys under a prefix, and tells when one for a marker key
// arrives.
type deleteEvents struct {
	prefix, marker string
	n              atomic.Int64
	once           sync.Once
	seen           chan struct{}
}

func (c *deleteEvents) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	return eventStream{s, c}, err
}

type eventStream struct {
	grpc.ClientStream
	c *deleteEvents
}

func (s eventStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if wr, ok := m.(*etcdserverpb.WatchResponse); ok && err == nil {
		for _, ev := range wr.Events {
			switch k := string(ev.Kv.Key); {
			case ev.Type != mvccpb.DELETE:
			case k == s.c.marker:
				s.c.once.Do(func() { close(s.c.seen) })
			case strings.HasPrefix(k, s.c.prefix):
				s.c.n.Add(1)
			}
		}
	}
	return err
}

// TestLossWatchShared: the dlock clients of one etcd client share one loss
// watch, so a delete reaches the process once, not once per client (with
// a prefix watch each, 50 clients on one etcd client received 51 watch
// events per increment of a shared counter); the loss is still reported to
// the lock whose key it was, and to it only, here a lock of the last
// client to join, whose watch was running already.
func TestLossWatchShared(t *testing.T) {
	const n = 5
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	eps := testserver.Etcd(t)
	name := benchName(t)
	pfx := (&Driver{root: "dlocktest/"}).namePrefix(name + "/victim")
	ev := &deleteEvents{prefix: pfx, marker: "dlocktest/" + name + "-marker", seen: make(chan struct{})}
	cli := newClient(t, eps, grpc.WithChainStreamInterceptor(ev.stream))
	admin := newClient(t, eps)

	leases := make([]*dlock.Lease, n)
	for i := range leases {
		c := newLockClient(t, cli, dlock.WithTTL(longTTL))
		lname := fmt.Sprintf("%s/%d", name, i)
		if i == n-1 {
			lname = name + "/victim"
		}
		l, err := c.Mutex(lname).TryLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		<-c.Driver().(*Driver).watched
		leases[i] = l
	}
	if _, err := admin.Put(ctx, ev.marker, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Delete(ctx, pfx, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	// Watch events come in revision order on the client's one stream: once
	// the marker's delete has arrived, every event of the victim's has.
	if _, err := admin.Delete(ctx, ev.marker); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ev.seen:
	case <-ctx.Done():
		t.Fatal("the marker's delete never arrived")
	}
	if got := ev.n.Load(); got != 1 {
		t.Errorf("the victim's delete reached the etcd client %d times (%d dlock clients on it), want once", got, n)
	}
	victim := leases[n-1]
	select {
	case <-victim.Done():
		if !errors.Is(victim.Err(), dlock.ErrLockLost) {
			t.Errorf("victim ended with %v, want ErrLockLost", victim.Err())
		}
	case <-ctx.Done():
		t.Fatal("the victim's loss was not reported")
	}
	for i, l := range leases[:n-1] {
		if err := l.Err(); err != nil {
			t.Errorf("lease %d: %v, want it held", i, err)
		}
		unlock(t, l)
	}
}
