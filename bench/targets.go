package bench

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	"github.com/go-zookeeper/zk"
	"github.com/jackc/pgx/v5/pgxpool"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/etcdlock"
	"github.com/dlockio/dlock/filelock"
	"github.com/dlockio/dlock/memlock"
	"github.com/dlockio/dlock/pglock"
	"github.com/dlockio/dlock/redislock"
	"github.com/dlockio/dlock/zklock"
)

// Targets returns one target per engine of e, their families suffixed
// with suffix ("" for the shared servers, "-1n" for the single-node ones).
func (e *Engines) Targets(suffix string) []Target {
	var ts []Target
	if suffix == "" {
		ts = append(ts, Target{Name: "dlock-mem", Family: "mem", Open: memlock.New})
	}
	if e.FileDir != "" {
		dir := e.FileDir
		ts = append(ts, Target{Name: "dlock-file", Family: "file",
			Open:   func(opts ...dlock.Option) (*dlock.Client, error) { return filelock.New(dir, opts...) },
			Floor:  fileFloor(dir),
			ScaleN: fileScaleN()})
	}
	if e.Redis != nil {
		rdb := e.Redis.Clients[0]
		sc := RedisCommandCalls(rdb)
		ts = append(ts, Target{Name: "dlock-redis" + suffix, Family: "redis" + suffix,
			Open:  func(opts ...dlock.Option) (*dlock.Client, error) { return redislock.New(rdb, nil, opts...) },
			Floor: e.Redis.scaleFloor(), Count: &sc, Sent: e.Redis.sent.Load, SentIsRequests: true})
	}
	if e.Etcd != nil {
		cli := e.Etcd.Client
		sc := EtcdGRPCReceived(e.Etcd.Addrs)
		ts = append(ts, Target{Name: "dlock-etcd" + suffix, Family: "etcd" + suffix,
			Open:  func(opts ...dlock.Option) (*dlock.Client, error) { return etcdlock.New(cli, nil, opts...) },
			Floor: etcdScaleFloor(cli), Count: &sc, Sent: e.Etcd.sent.Load})
	}
	if e.ZK != nil {
		z := e.ZK
		sc := ZKPacketsReceived(z.Addrs)
		ts = append(ts, Target{Name: "dlock-zk" + suffix, Family: "zk" + suffix,
			Open: func(opts ...dlock.Option) (*dlock.Client, error) {
				return zklock.Dial(context.Background(), z.Addrs, &zklock.Options{Dialer: z.dial}, opts...)
			},
			Floor: z.scaleFloor(), Count: &sc, Sent: z.sent.Load})
	}
	if e.PG != nil {
		pool := e.PG
		sc := PGTransactions(pool)
		ts = append(ts, Target{Name: "dlock-pg" + suffix, Family: "pg" + suffix,
			Open:  func(opts ...dlock.Option) (*dlock.Client, error) { return pglock.New(pool, nil, opts...) },
			Floor: pgFloor(pool), Count: &sc, Sent: pgSent.Load, ScaleN: PGScaleN})
	}
	return ts
}

// PGScaleN is how many locks the scale scenario holds on PostgreSQL: as
// many as on the other engines now that pglock batches its grants,
// renewals and releases per session (it once took about a hundred a
// second, and held 1,000).
const PGScaleN = 10000

// fileScaleN is how many file locks the process's descriptor limit allows
// (two descriptors per held lock, and room for the rest), 0 for no bound
// below DefaultScale.N.
func fileScaleN() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if n := (int(rl.Cur) - 1000) / 2; n < DefaultScale.N {
		return max(n, 100)
	}
	return 0
}

func fileFloor(dir string) *RawFloor {
	return &RawFloor{Note: "open + flock(LOCK_EX|LOCK_NB), kept open; close", Worker: func(context.Context) (FloorWorker, error) {
		files := map[string]*os.File{}
		return FloorWorker{
			Take: func(_ context.Context, name string) error {
				f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
				if err != nil {
					return err
				}
				if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
					f.Close()
					return err
				}
				files[name] = f
				return nil
			},
			Release: func(_ context.Context, name string) error {
				f := files[name]
				delete(files, name)
				os.Remove(f.Name())
				return f.Close()
			},
		}, nil
	}}
}

func (e *RedisEngine) scaleFloor() *RawFloor {
	c := e.Clients[0]
	return &RawFloor{Note: "SET NX PX; DEL", Worker: func(context.Context) (FloorWorker, error) {
		v := randomValue()
		return FloorWorker{
			Take: func(ctx context.Context, name string) error {
				ok, err := c.SetNX(ctx, name, v, DefaultScale.TTL).Result()
				if err == nil && !ok {
					err = fmt.Errorf("floor: %s already held", name)
				}
				return err
			},
			Release: func(ctx context.Context, name string) error { return c.Del(ctx, name).Err() },
		}, nil
	}}
}

func etcdScaleFloor(cli *clientv3.Client) *RawFloor {
	return &RawFloor{Note: "Txn(create_revision==0 → Put); Delete", Worker: func(context.Context) (FloorWorker, error) {
		v := randomValue()
		return FloorWorker{
			Take: func(ctx context.Context, name string) error {
				r, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(name), "=", 0)).Then(clientv3.OpPut(name, v)).Commit()
				if err == nil && !r.Succeeded {
					err = fmt.Errorf("floor: %s already held", name)
				}
				return err
			},
			Release: func(ctx context.Context, name string) error { _, err := cli.Delete(ctx, name); return err },
		}, nil
	}}
}

func (e *ZKEngine) scaleFloor() *RawFloor {
	c := e.Conn
	return &RawFloor{Note: "create ephemeral node; delete (one shared session)", Worker: func(context.Context) (FloorWorker, error) {
		return FloorWorker{
			Take: func(_ context.Context, name string) error {
				_, err := c.Create(ZKRoot+"/"+name, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
				return err
			},
			Release: func(_ context.Context, name string) error { return c.Delete(ZKRoot+"/"+name, -1) },
		}, nil
	}}
}

// pgKey maps a name to an advisory-lock key (FNV-64; a collision would
// only make the floor report an error).
func pgKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}

func pgFloor(pool *pgxpool.Pool) *RawFloor {
	return &RawFloor{Note: "pg_try_advisory_lock on a connection per goroutine; pg_advisory_unlock", Worker: func(ctx context.Context) (FloorWorker, error) {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return FloorWorker{}, err
		}
		return FloorWorker{
			Take: func(ctx context.Context, name string) error {
				var ok bool
				if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", pgKey(name)).Scan(&ok); err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("floor: %s already held", name)
				}
				return nil
			},
			Release: func(ctx context.Context, name string) error {
				var ok bool
				if err := conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1)", pgKey(name)).Scan(&ok); err != nil {
					return err
				}
				if !ok {
					return errors.New("floor: pg_advisory_unlock: not held")
				}
				return nil
			},
			Close: conn.Release,
		}, nil
	}}
}
