package bench

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/filelock"
	"github.com/dlockio/dlock/redislock"
	"github.com/dlockio/dlock/zklock"
)

// dlockContender wraps a constructor of dlock clients, called once per
// worker.
func dlockContender(name, family, note string, open func() (*dlock.Client, error)) Contender {
	return Contender{
		Name: name, Family: family, Kind: Dlock, Note: note,
		NewWorker: func(context.Context) (Worker, error) {
			c, err := open()
			if err != nil {
				return nil, err
			}
			return DlockWorker(c), nil
		},
	}
}

func dlockFile(e *Engines) []Contender {
	return []Contender{dlockContender("dlock-file", "file", "filelock.New(dir), a client per worker",
		func() (*dlock.Client, error) { return filelock.New(e.FileDir) })}
}

func dlockRedis(e *Engines) []Contender {
	open := func() (*dlock.Client, error) { return redislock.New(e.Redis.Clients[0]) }
	return []Contender{
		dlockContender("dlock-redis", "redis", "redislock.New(rdb) per worker on the shared go-redis client, defaults", open),
		dlockShared("dlock-redis-1c", "redis", "one redislock client shared by all workers (one process)", open),
	}
}

func dlockRedlock(e *Engines) []Contender {
	nodes := make([]redis.UniversalClient, len(e.Redis.Clients))
	for i, c := range e.Redis.Clients {
		nodes[i] = c
	}
	return []Contender{dlockContender("dlock-redlock", "redlock", "redislock.NewRedlock(5 nodes) per worker, defaults",
		func() (*dlock.Client, error) { return redislock.NewRedlock(nodes) })}
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
		NewWorker: func(context.Context) (Worker, error) {
			once.Do(func() { shared, err = open() })
			if err != nil {
				return nil, err
			}
			w := DlockWorker(shared).(WorkerFunc)
			w.CloseFunc = nil // the client outlives every scenario
			return w, nil
		},
	}
}

func dlockZK(e *Engines) []Contender {
	open := func() (*dlock.Client, error) {
		return zklock.Dial(context.Background(), ZKAddrs(), zklock.Options{Dialer: e.ZK.dial})
	}
	return []Contender{dlockShared("dlock-zk", "zk", "one zklock.Dial session shared by all workers, like zk-lock's", open)}
}
