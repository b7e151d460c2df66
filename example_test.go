package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlockio/dlock"
	_ "github.com/dlockio/dlock/memlock" // registers mem://
)

func Example() {
	ctx := context.Background()
	c, err := dlock.Open(ctx, "mem://example") // or etcd://…, redis://…, zk://…, file:///…
	if err != nil {
		panic(err)
	}
	defer c.Close()

	lease, err := c.Mutex("billing/nightly").Lock(ctx)
	if err != nil {
		panic(err)
	}
	// Pass the token to the resource, which refuses older ones.
	fmt.Println("holding with token", lease.Token())
	select {
	case <-lease.Done():
		fmt.Println("lost:", lease.Err()) // stop writing
	default:
	}
	if err := lease.Unlock(ctx); err != nil {
		panic(err)
	}
	// Output: holding with token 1
}

func ExampleDo() {
	ctx := context.Background()
	c, err := dlock.Open(ctx, "mem://do", dlock.WithTTL(5*time.Second))
	if err != nil {
		panic(err)
	}
	defer c.Close()

	err = dlock.Do(ctx, c, "reports", func(ctx context.Context, l *dlock.Lease) error {
		// ctx is cancelled if the lock is lost.
		fmt.Println("generating reports under token", l.Token())
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// generating reports under token 1
	// err: <nil>
}

func ExampleMutex_TryLock() {
	ctx := context.Background()
	c, _ := dlock.Open(ctx, "mem://trylock")
	defer c.Close()
	other, _ := dlock.Open(ctx, "mem://trylock")
	defer other.Close()

	l, _ := c.Mutex("cron/cleanup").TryLock(ctx)
	_, err := other.Mutex("cron/cleanup").TryLock(ctx)
	fmt.Println(errors.Is(err, dlock.ErrNotAcquired))
	l.Unlock(ctx)
	// Output: true
}

func ExampleRWMutex() {
	ctx := context.Background()
	c, _ := dlock.Open(ctx, "mem://rw")
	defer c.Close()

	rw := c.RWMutex("catalog")
	r1, _ := rw.RLock(ctx) // readers share
	r2, _ := rw.RLock(ctx)
	_, err := rw.TryLock(ctx) // a writer waits for every reader
	fmt.Println("writer while two read:", errors.Is(err, dlock.ErrNotAcquired))
	r1.Unlock(ctx)
	r2.Unlock(ctx)
	w, _ := rw.Lock(ctx)
	fmt.Println("writer's token is above the readers':", w.Token() > r2.Token())
	w.Unlock(ctx)
	// Output:
	// writer while two read: true
	// writer's token is above the readers': true
}

func ExampleSemaphore() {
	ctx := context.Background()
	c, _ := dlock.Open(ctx, "mem://sem")
	defer c.Close()

	api := c.Semaphore("payment-api", 2) // at most 2 callers at once
	a, _ := api.Acquire(ctx)
	b, _ := api.Acquire(ctx)
	_, err := api.TryAcquire(ctx)
	fmt.Println("a third caller:", errors.Is(err, dlock.ErrNotAcquired))
	a.Unlock(ctx)
	b.Unlock(ctx)
	// Output: a third caller: true
}

func ExampleElection() {
	ctx := context.Background()
	c, _ := dlock.Open(ctx, "mem://election")
	defer c.Close()

	e := c.Election("billing-service")
	lead, err := e.Campaign(ctx, "10.0.0.7:8080") // waits until this client leads
	if err != nil {
		panic(err)
	}
	leader, _ := e.Leader(ctx) // what every other instance sees
	fmt.Println("leader:", leader.Value, "term:", leader.Term == lead.Term())
	// Pass lead.Term() with what the leader writes; stop when lead.Done() closes.
	lead.Resign(ctx)
	leader, _ = e.Leader(ctx)
	fmt.Println("after resigning:", leader == dlock.Leader{})
	// Output:
	// leader: 10.0.0.7:8080 term: true
	// after resigning: true
}
