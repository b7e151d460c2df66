package bench

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/filelock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/redislock"
	"github.com/dlockio/dlock/zklock"
)

// dlockContender wraps a constructor of dlock clients, called once per
// worker.
func dlockContender(name, family, note string, open func() (*dlock.Client, error)) Contender {
	return Contender{
		Name: name, Family: family, Kind: Dlock, Note: note,
		NewWorker: func(context.Context) (scenario.Locker, error) {
			c, err := open()
			if err != nil {
				return nil, err
			}
			return scenario.Client(c), nil
		},
	}
}

func dlockFile(e *Engines) []Contender {
	return []Contender{dlockContender("dlock-file", "file", "filelock.New(dir), a client per worker",
		func() (*dlock.Client, error) { return filelock.New(e.FileDir) })}
}

func dlockRedis(e *Engines) []Contender {
	open := func() (*dlock.Client, error) { return redislock.New(e.Redis.Clients[0], nil) }
	fifo := func() (*dlock.Client, error) {
		return redislock.New(e.Redis.Clients[0], &redislock.Options{Fairness: redislock.FIFO})
	}
	return []Contender{
		dlockContender("dlock-redis", "redis", "redislock.New(rdb) per worker on the shared go-redis client, defaults", open),
		dlockShared("dlock-redis-1c", "redis", "one redislock client shared by all workers (one process)", open),
		dlockContender("dlock-redis-fifo", "redis", "redislock.New(rdb) per worker on the shared go-redis client, Options.Fairness FIFO (strict hand-over)", fifo),
	}
}

func dlockRedlock(e *Engines) []Contender {
	nodes := make([]redis.UniversalClient, len(e.Redis.Clients))
	for i, c := range e.Redis.Clients {
		nodes[i] = c
	}
	return []Contender{
		dlockContender("dlock-redlock", "redlock", "redislock.NewRedlock(5 nodes) per worker on the shared go-redis clients, defaults",
			func() (*dlock.Client, error) { return redislock.NewRedlock(nodes, nil) }),
		dlockRedlockPerWorker(e),
	}
}

// dlockRedlockPerWorker gives every worker go-redis clients of its own to
// the five nodes, as separate processes would have: every worker then has
// its own pub/sub connections and its own pool per node, and wake-ups
// travel between clients rather than within one (the setting in which
// Redlock waiters were once seen to stall for a whole TTL: a wake-up lost
// between clients left a waiter asleep until the holder's key expired).
func dlockRedlockPerWorker(e *Engines) Contender {
	return Contender{
		Name: "dlock-redlock-cpw", Family: "redlock", Kind: Dlock,
		Note: "redislock.NewRedlock per worker over go-redis clients of its own to the 5 nodes, defaults",
		NewWorker: func(ctx context.Context) (scenario.Locker, error) {
			var rdbs []*redis.Client
			var nodes []redis.UniversalClient
			closeAll := func() {
				for _, c := range rdbs {
					c.Close()
				}
			}
			for _, shared := range e.Redis.Clients {
				c := redis.NewClient(&redis.Options{Addr: shared.Options().Addr})
				c.AddHook(countHook{&e.Redis.sent})
				rdbs, nodes = append(rdbs, c), append(nodes, c)
			}
			c, err := redislock.NewRedlock(nodes, nil)
			if err != nil {
				closeAll()
				return nil, err
			}
			w := scenario.Client(c)
			w.CloseFunc = func() error {
				err := c.Close()
				closeAll()
				return err
			}
			return w, nil
		},
	}
}

// dlockShared is one dlock client shared by every worker, the way one
// process with many goroutines uses it: waiters of one client are woken one
// at a time instead of each retrying.
func dlockShared(name, family, note string, open func() (*dlock.Client, error)) Contender {
	var (
		once   sync.Once
		shared *dlock.Client
		err    error
	)
	return Contender{
		Name: name, Family: family, Kind: Dlock, Note: note,
		NewWorker: func(context.Context) (scenario.Locker, error) {
			once.Do(func() { shared, err = open() })
			if err != nil {
				return nil, err
			}
			w := scenario.Client(shared)
			w.CloseFunc = nil // the client outlives every scenario
			return w, nil
		},
	}
}

func dlockZK(e *Engines) []Contender {
	open := func() (*dlock.Client, error) {
		return zklock.Dial(context.Background(), e.ZK.Addrs, &zklock.Options{Dialer: e.ZK.dial})
	}
	return []Contender{dlockShared("dlock-zk", "zk", "one zklock.Dial session shared by all workers, like zk-lock's", open)}
}
