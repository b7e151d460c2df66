package zklock_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/zklock"
)

// Open a client from a zk:// URL: servers, then the znode under which the
// lock queues live.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	servers := exampleServers() // "h1:2181,h2:2181,h3:2181"
	c, err := dlock.Open(ctx, "zk://"+servers+"/dlock-example", dlock.WithTTL(4*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println("fencing:", c.Capabilities().Fencing)

	l, err := c.Mutex("billing/nightly").Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	// The token is the czxid of the holder's node, which rises across the
	// whole ensemble: pass it to the resource, which refuses older ones.
	fmt.Println("holding:", l.Token() > 0)
	if err := l.Unlock(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// fencing: strong
	// holding: true
}

// Take locks on a connection of your own: its session holds them, and the
// session timeout given to zk.Connect is the locks' TTL.
func ExampleNew() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const sessionTimeout = 4 * time.Second
	conn, events, err := zk.Connect(strings.Split(exampleServers(), ","), sessionTimeout, zk.WithLogInfo(false))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close() // closing the client leaves conn open

	c, err := zklock.New(conn, events, &zklock.Options{SessionTimeout: sessionTimeout, Prefix: "/dlock-example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	err = dlock.Do(ctx, c, "reports", func(ctx context.Context, l *dlock.Lease) error {
		st, err := c.Status(ctx, "reports")
		fmt.Println("held:", st.Held, "token matches:", st.Token == l.Token())
		return err
	})
	fmt.Println("err:", err)
	// Output:
	// held: true token matches: true
	// err: <nil>
}

// exampleServers is the ensemble the examples run against in the tests:
// internal/testserver's shared one ($DLOCK_TEST_ZK, which make test
// exports, or its default addresses). Your code has its own servers.
func exampleServers() string {
	if s := os.Getenv(testserver.EnvZooKeeper); s != "" {
		return s
	}
	return strings.Join(testserver.DefaultZooKeeper, ",")
}
