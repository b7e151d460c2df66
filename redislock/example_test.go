package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/redislock"
)

func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddrs()[0]})
	defer rdb.Close()

	c, err := redislock.New(rdb, &redislock.Options{Prefix: "example:"}, dlock.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	lease, err := c.Mutex("billing/nightly").Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Pass lease.Token() to the resource, which refuses older tokens.
	st, err := c.Status(ctx, "billing/nightly")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("held:", st.Held, "token seen by Status:", st.Token == lease.Token())
	if err := lease.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	// Output: held: true token seen by Status: true
}

func Example_open() {
	ctx := context.Background()
	// import _ "github.com/dlockio/dlock/redislock" registers redis://,
	// rediss:// and redlock://.
	c, err := dlock.Open(ctx, "redis://"+redisAddrs()[0]+"/0?prefix=example:")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	err = dlock.Do(ctx, c, "reports", func(ctx context.Context, l *dlock.Lease) error {
		// ctx is cancelled if the lock is lost.
		fmt.Println("generating reports")
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// generating reports
	// err: <nil>
}

func ExampleNewRedlock() {
	ctx := context.Background()
	var nodes []redis.UniversalClient
	for _, addr := range redisAddrs()[:3] { // independent masters, not replicas
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		nodes = append(nodes, rdb)
	}
	c, err := redislock.NewRedlock(nodes, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	lease, err := c.Mutex("example/redlock").Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("held on a majority, token > 0:", lease.Token() > 0)
	if err := lease.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	// Output: held on a majority, token > 0: true
}

// redisAddrs returns the shared test Redis nodes of internal/testserver
// (`make test` starts them; an Example has no testing.TB to ask
// testserver.Redis with). Without them the examples fail, in CI or not,
// printing the error.
func redisAddrs() []string {
	if v := os.Getenv(testserver.EnvRedis); v != "" {
		return strings.Split(v, ",")
	}
	return testserver.DefaultRedis
}

// Readers share a read-write lock on one Redis node; a writer (or a Mutex
// of the same name) waits for them, and readers that come after a waiting
// writer wait behind it. A semaphore lets n holders in at once.
func Example_rwMutexAndSemaphore() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddrs()[0]})
	defer rdb.Close()
	c, err := redislock.New(rdb, &redislock.Options{Prefix: "example:"}, dlock.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	rw := c.RWMutex("catalog")
	r1, err := rw.RLock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	r2, err := rw.TryRLock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = rw.TryLock(ctx)
	fmt.Println("writer while two readers hold:", errors.Is(err, dlock.ErrNotAcquired))
	st, err := c.Status(ctx, "catalog")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("holders:", st.Holders, st.Mode)
	for _, r := range []*dlock.Lease{r1, r2} {
		if err := r.Unlock(ctx); err != nil {
			fmt.Println(err)
		}
	}

	sem := c.Semaphore("payment-api", 2)
	var permits []*dlock.Lease
	for range 2 {
		p, err := sem.TryAcquire(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		permits = append(permits, p)
	}
	_, err = sem.TryAcquire(ctx)
	fmt.Println("third permit:", errors.Is(err, dlock.ErrNotAcquired))
	for _, p := range permits {
		if err := p.Unlock(ctx); err != nil {
			fmt.Println(err)
		}
	}
	// Output:
	// writer while two readers hold: true
	// holders: 2 shared
	// third permit: true
}
