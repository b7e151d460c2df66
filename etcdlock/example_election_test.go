package etcdlock_test

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/etcdlock"
)

// One active instance of a service: each instance campaigns with its
// address; the others (and anyone else) read or follow the leader.
func Example_election() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	endpoints, prefix := testCluster()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	opts := &etcdlock.Options{Prefix: prefix}
	c, err := etcdlock.New(cli, opts, dlock.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	watcher, err := etcdlock.New(cli, opts) // another process, in real life
	if err != nil {
		fmt.Println(err)
		return
	}
	defer watcher.Close()

	leaders, err := watcher.Election("billing").Observe(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("leader: %q\n", (<-leaders).Value) // nobody yet

	lead, err := c.Election("billing").Campaign(ctx, "10.0.0.7:8080")
	if err != nil {
		fmt.Println(err)
		return
	}
	l := <-leaders
	fmt.Printf("leader: %q, term is the lease's token: %v\n", l.Value, l.Term == lead.Term())

	if err := lead.Proclaim(ctx, "10.0.0.7:9090"); err != nil { // the leader moved
		fmt.Println(err)
		return
	}
	fmt.Printf("leader: %q\n", (<-leaders).Value)
	if err := lead.Resign(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("leader: %q\n", (<-leaders).Value)
	// Output:
	// leader: ""
	// leader: "10.0.0.7:8080", term is the lease's token: true
	// leader: "10.0.0.7:9090"
	// leader: ""
}
