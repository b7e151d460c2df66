package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	rsredis "github.com/go-redsync/redsync/v4/redis"
	rsgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
)

// LockTTL is the lease every contender asks for: long enough that nothing
// expires during a run, so only the release and the waiting primitive decide
// a handoff.
const LockTTL = 10 * time.Second

// RedisEngine is the shared go-redis clients, one per node, with a hook that
// counts every command this process sends.
type RedisEngine struct {
	Clients []*redis.Client
	sent    atomic.Int64
}

// NewRedisEngine connects to addrs (the first one is the single node).
func NewRedisEngine(ctx context.Context, addrs []string) (*RedisEngine, error) {
	e := &RedisEngine{}
	for _, a := range addrs {
		// Enough connections for 50 workers plus their counter traffic: the
		// default pool (10 per CPU) would make every contender queue on the
		// pool rather than on the lock.
		c := redis.NewClient(&redis.Options{Addr: a, PoolSize: 128})
		c.AddHook(countHook{&e.sent})
		if err := c.Ping(ctx).Err(); err != nil {
			e.Close()
			return nil, err
		}
		e.Clients = append(e.Clients, c)
	}
	return e, nil
}

// Close closes every client.
func (e *RedisEngine) Close() error {
	var errs []error
	for _, c := range e.Clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

type countHook struct{ n *atomic.Int64 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// Family returns the single-node family (counter on node 1) or, with
// quorum true, the Redlock family (counter on node 1 too: the counter is the
// protected resource, not part of the lock).
func (e *RedisEngine) Family(name string) Family {
	return Family{Name: name, Counter: engines.Redis(e.Clients[0]), Commands: e.sent.Load}
}

func randomValue() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// RedisFloor is SET NX PX + DEL on the single node: the least any Redis lock
// can do. It has no waiting primitive, so a waiter spins.
func (e *RedisEngine) RedisFloor() Contender {
	c := e.Clients[0]
	return Contender{
		Name: "floor-redis", Family: "redis", Kind: Floor, NoWait: true,
		Note: "SET NX PX, spin; DEL",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				v := randomValue()
				for {
					ok, err := c.SetNX(ctx, name, v, LockTTL).Result()
					if err != nil {
						return nil, err
					}
					if ok {
						return func(ctx context.Context) error { return c.Del(ctx, name).Err() }, nil
					}
				}
			}}, nil
		},
	}
}

// RedlockFloor is one parallel SET NX PX to every node, held on a majority,
// and one parallel DEL: the round-trip limit of a quorum lock.
func (e *RedisEngine) RedlockFloor() Contender {
	return Contender{
		Name: "floor-redlock", Family: "redlock", Kind: Floor, NoWait: true,
		Note: "parallel SET NX PX on 5 nodes, majority, spin; parallel DEL",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				v := randomValue()
				for {
					got := make([]bool, len(e.Clients))
					var wg sync.WaitGroup
					var firstErr atomic.Pointer[error]
					for i, c := range e.Clients {
						wg.Go(func() {
							ok, err := c.SetNX(ctx, name, v, LockTTL).Result()
							if err != nil {
								firstErr.CompareAndSwap(nil, &err)
							}
							got[i] = ok
						})
					}
					wg.Wait()
					n := 0
					for _, ok := range got {
						if ok {
							n++
						}
					}
					release := func(ctx context.Context) error {
						var wg sync.WaitGroup
						for i, c := range e.Clients {
							if got[i] {
								wg.Go(func() { c.Del(ctx, name) })
							}
						}
						wg.Wait()
						return nil
					}
					if n > len(e.Clients)/2 {
						return release, nil
					}
					release(context.WithoutCancel(ctx))
					if p := firstErr.Load(); p != nil && ctx.Err() != nil {
						return nil, *p
					}
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
				}
			}}, nil
		},
	}
}

// Bsm is github.com/bsm/redislock with LinearBackoff(retry), the blocking
// mode its docs show (100 ms there).
func (e *RedisEngine) Bsm(name string, retry time.Duration, note string) Contender {
	c := e.Clients[0]
	return Contender{
		Name: name, Family: "redis", Kind: Peer, Note: note,
		NewWorker: func(context.Context) (scenario.Locker, error) {
			locker := redislock.New(c)
			opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(retry)}
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				for {
					// Without a deadline Obtain gives up after one TTL; the
					// harness's contexts always have one, but keep waiting
					// as a user would if it ever returns ErrNotObtained.
					l, err := locker.Obtain(ctx, name, LockTTL, opt)
					if errors.Is(err, redislock.ErrNotObtained) && ctx.Err() == nil {
						continue
					}
					if err != nil {
						return nil, err
					}
					return l.Release, nil
				}
			}}, nil
		},
	}
}

// Redsync is github.com/go-redsync/redsync/v4 over the first n nodes (1 is
// the single-node mode, 5 is Redlock), with extra options for the tuned run.
func (e *RedisEngine) Redsync(name, family string, n int, note string, opts ...redsync.Option) Contender {
	return Contender{
		Name: name, Family: family, Kind: Peer, Note: note,
		NewWorker: func(context.Context) (scenario.Locker, error) {
			var pools []rsredis.Pool
			for _, c := range e.Clients[:n] {
				pools = append(pools, rsgoredis.NewPool(c))
			}
			rs := redsync.New(pools...)
			opts := append([]redsync.Option{redsync.WithExpiry(LockTTL)}, opts...)
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				m := rs.NewMutex(name, opts...)
				for {
					err := m.LockContext(ctx)
					// Its docs: "In case it returns an error on failure, you
					// may retry to acquire the lock by calling this method
					// again" — after its 32 tries it reports ErrFailed.
					var taken redsync.ErrTaken
					if (errors.Is(err, redsync.ErrFailed) || errors.As(err, &taken)) && ctx.Err() == nil {
						continue
					}
					if err != nil {
						return nil, err
					}
					return func(ctx context.Context) error { _, err := m.UnlockContext(ctx); return err }, nil
				}
			}}, nil
		},
	}
}

// RedisAddrs returns the Redis nodes from DLOCK_TEST_REDIS or the defaults of
// scripts/services.sh.
func RedisAddrs() []string {
	return addrsFromEnv("DLOCK_TEST_REDIS", "127.0.0.1:16371,127.0.0.1:16372,127.0.0.1:16373,127.0.0.1:16374,127.0.0.1:16375")
}

// Version reports the first node's redis_version.
func (e *RedisEngine) Version(ctx context.Context) string {
	info, err := e.Clients[0].Info(ctx, "server").Result()
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
			return v
		}
	}
	return "unknown"
}
