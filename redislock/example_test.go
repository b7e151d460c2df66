package redislock_test

import (
	"context"
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
