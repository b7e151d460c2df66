package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-redsync/redsync/v4"
)

// Engines holds the shared connections of one benchmark process.
type Engines struct {
	Redis   *RedisEngine
	Etcd    *EtcdEngine
	ZK      *ZKEngine
	PG      *PGEngine
	FileDir string
}

// Close closes every connection and removes the lock files.
func (e *Engines) Close() error {
	var errs []error
	if e.Redis != nil {
		errs = append(errs, e.Redis.Close())
	}
	if e.Etcd != nil {
		errs = append(errs, e.Etcd.Close())
	}
	if e.ZK != nil {
		errs = append(errs, e.ZK.Close())
	}
	if e.PG != nil {
		errs = append(errs, e.PG.Close())
	}
	if e.FileDir != "" {
		errs = append(errs, os.RemoveAll(e.FileDir))
	}
	return errors.Join(errs...)
}

// Connect opens every engine; an engine that does not answer is an error,
// since a benchmark that silently drops a contender proves nothing.
func Connect(ctx context.Context) (*Engines, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	e := &Engines{}
	var err error
	if e.FileDir, err = os.MkdirTemp("", "peerbench-"); err != nil {
		return nil, err
	}
	if e.Redis, err = NewRedisEngine(ctx, RedisAddrs()); err != nil {
		e.Close()
		return nil, fmt.Errorf("redis %v: %w (run scripts/services.sh up)", RedisAddrs(), err)
	}
	if e.Etcd, err = NewEtcdEngine(ctx, EtcdAddrs()); err != nil {
		e.Close()
		return nil, fmt.Errorf("etcd %v: %w (run scripts/services.sh up)", EtcdAddrs(), err)
	}
	if e.ZK, err = NewZKEngine(ctx, ZKAddrs()); err != nil {
		e.Close()
		return nil, fmt.Errorf("zookeeper %v: %w (run scripts/services.sh up)", ZKAddrs(), err)
	}
	if e.PG, err = NewPGEngine(ctx, PGURL()); err != nil {
		e.Close()
		return nil, fmt.Errorf("postgres: %w (run scripts/services.sh up)", err)
	}
	return e, nil
}

// Suite returns every contender and family on e, grouped by family: floor
// first, then the peers, then dlock.
func (e *Engines) Suite() *Suite {
	memC, memF := MemContenders()
	s := &Suite{Families: map[string]Family{
		"mem":      memF,
		"file":     FileFamily(e.FileDir),
		"redis":    e.Redis.Family("redis"),
		"redlock":  e.Redis.Family("redlock"),
		"etcd":     e.Etcd.Family(),
		"zk":       e.ZK.Family(),
		"postgres": e.PG.Family(),
	}}
	tuned := []redsync.Option{redsync.WithRetryDelay(time.Millisecond), redsync.WithTries(1 << 30)}
	s.Contenders = append(s.Contenders, memC...)
	s.Contenders = append(s.Contenders,
		FileFloor(e.FileDir),
	)
	s.Contenders = append(s.Contenders, dlockFile(e)...)
	s.Contenders = append(s.Contenders,
		e.Redis.RedisFloor(),
		e.Redis.Redsync("redsync", "redis", 1, "defaults: 32 tries, 50–250 ms random delay; retried on ErrFailed"),
		e.Redis.Redsync("redsync-1ms", "redis", 1, "tuned: WithRetryDelay(1 ms), unlimited tries", tuned...),
		e.Redis.Bsm("bsm", 100*time.Millisecond, "LinearBackoff(100 ms), as its docs show"),
		e.Redis.Bsm("bsm-1ms", time.Millisecond, "tuned: LinearBackoff(1 ms)"),
	)
	s.Contenders = append(s.Contenders, dlockRedis(e)...)
	s.Contenders = append(s.Contenders,
		e.Redis.RedlockFloor(),
		e.Redis.Redsync("redsync-5", "redlock", 5, "5 pools, defaults"),
		e.Redis.Redsync("redsync-5-1ms", "redlock", 5, "5 pools, tuned: WithRetryDelay(1 ms), unlimited tries", tuned...),
	)
	s.Contenders = append(s.Contenders, dlockRedlock(e)...)
	s.Contenders = append(s.Contenders, e.Etcd.Floor(), e.Etcd.Mutex())
	s.Contenders = append(s.Contenders, dlockEtcd(e)...)
	s.Contenders = append(s.Contenders, e.ZK.Floor(), e.ZK.Lock())
	s.Contenders = append(s.Contenders, dlockZK(e)...)
	s.Contenders = append(s.Contenders, e.PG.Floor(), e.PG.Cirello())
	s.Contenders = append(s.Contenders, dlockPostgres(e.PG)...)
	return s
}
