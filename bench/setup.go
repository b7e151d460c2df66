package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Engines holds the shared connections of one benchmark process.
type Engines struct {
	Redis   *RedisEngine
	Etcd    *EtcdEngine
	ZK      *ZKEngine
	PG      *pgxpool.Pool // nil on the single-node setup
	PGLocks *PGEngine     // the PostgreSQL lock contenders' connections; nil on the single-node setup
	FileDir string        // "" on the single-node setup
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
	if e.PGLocks != nil {
		errs = append(errs, e.PGLocks.Close())
	}
	if e.PG != nil {
		e.PG.Close()
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
	if e.PG, err = connectPG(ctx, PGURL()); err != nil {
		e.Close()
		return nil, fmt.Errorf("postgres: %w (run scripts/services.sh up)", err)
	}
	if e.PGLocks, err = NewPGEngine(ctx, e.PG, PGURL()); err != nil {
		e.Close()
		return nil, fmt.Errorf("postgres: %w (run scripts/services.sh up)", err)
	}
	return e, nil
}

// ConnectSingle opens the single-node servers (no Redlock, file, mem or
// PostgreSQL there: those are measured on the shared setup only).
func ConnectSingle(ctx context.Context, s *SingleNode) (*Engines, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	e := &Engines{}
	var err error
	if e.Redis, err = NewRedisEngine(ctx, []string{s.Redis}); err != nil {
		e.Close()
		return nil, fmt.Errorf("single-node redis %s: %w", s.Redis, err)
	}
	if e.Etcd, err = NewEtcdEngine(ctx, []string{s.Etcd}); err != nil {
		e.Close()
		return nil, fmt.Errorf("single-node etcd %s: %w", s.Etcd, err)
	}
	if e.ZK, err = NewZKEngine(ctx, []string{s.ZK}); err != nil {
		e.Close()
		return nil, fmt.Errorf("single-node zookeeper %s: %w", s.ZK, err)
	}
	return e, nil
}

// PGURL is the shared PostgreSQL server's URL (DLOCK_TEST_PG, or the
// default of scripts/services.sh).
func PGURL() string {
	if u := os.Getenv("DLOCK_TEST_PG"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:15432/postgres?sslmode=disable"
}

func connectPG(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("bad DLOCK_TEST_PG URL") // pgx's error may quote the password
	}
	cfg.MaxConns = 96 // the scale floor holds a connection per goroutine
	// Every statement sent on the pool's connections, and on those that
	// pglock opens with its configuration (its sessions), is counted.
	cfg.ConnConfig.Tracer = pgSentTracer{}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// Suite returns every contender and family on e, grouped by family: floor
// first, then the peers, then dlock; with single (nil to leave it out), the
// Redis, etcd and ZooKeeper contenders again on the single-node servers,
// their names and families suffixed "-1n".
func (e *Engines) Suite(single *Engines) *Suite {
	memC, memF := MemContenders()
	s := &Suite{Families: map[string]Family{
		"mem":     memF,
		"file":    FileFamily(e.FileDir),
		"redlock": e.Redis.Family("redlock"),
	}}
	s.Contenders = append(s.Contenders, memC...)
	s.Contenders = append(s.Contenders,
		FileFloor(e.FileDir),
	)
	s.Contenders = append(s.Contenders, dlockFile(e)...)
	s.add(e.redisContenders())
	s.Contenders = append(s.Contenders,
		e.Redis.RedlockFloor(),
		e.Redis.Redsync("redsync-5", "redlock", 5, "5 pools, defaults"),
		e.Redis.Redsync("redsync-5-1ms", "redlock", 5, "5 pools, tuned: WithRetryDelay(1 ms), unlimited tries", tunedRedsync...),
	)
	s.Contenders = append(s.Contenders, dlockRedlock(e)...)
	s.add(e.etcdContenders())
	s.add(e.zkContenders())
	s.add(e.PGLocks.contenders())
	s.Targets = e.Targets("")
	s.Electors = []Elector{PeerElector("etcd", e.Etcd.Addrs), DlockElector("etcd", e.Etcd.Addrs), ZKElector("zookeeper", e.ZK.Addrs)}
	if single != nil {
		for _, set := range []func() ([]Contender, Family){single.redisContenders, single.etcdContenders, single.zkContenders} {
			cs, fam := set()
			for i := range cs {
				cs[i].Name += SingleSuffix
				cs[i].Family += SingleSuffix
				cs[i].Note = "single node: " + cs[i].Note
			}
			fam.Name += SingleSuffix
			s.add(cs, fam)
		}
		s.Targets = append(s.Targets, single.Targets(SingleSuffix)...)
		s.Electors = append(s.Electors, PeerElector("etcd"+SingleSuffix, single.Etcd.Addrs), DlockElector("etcd"+SingleSuffix, single.Etcd.Addrs))
	}
	return s
}

// SingleSuffix ends the names and families of the single-node setup.
const SingleSuffix = "-1n"

var tunedRedsync = []redsync.Option{redsync.WithRetryDelay(time.Millisecond), redsync.WithTries(1 << 30)}

// add appends a family's contenders and registers the family.
func (s *Suite) add(cs []Contender, fam Family) {
	s.Families[fam.Name] = fam
	s.Contenders = append(s.Contenders, cs...)
}

func (e *Engines) redisContenders() ([]Contender, Family) {
	cs := []Contender{
		e.Redis.RedisFloor(),
		e.Redis.Redsync("redsync", "redis", 1, "defaults: 32 tries, 50–250 ms random delay; retried on ErrFailed"),
		e.Redis.Redsync("redsync-1ms", "redis", 1, "tuned: WithRetryDelay(1 ms), unlimited tries", tunedRedsync...),
		e.Redis.Bsm("bsm", 100*time.Millisecond, "LinearBackoff(100 ms), as its docs show"),
		e.Redis.Bsm("bsm-1ms", time.Millisecond, "tuned: LinearBackoff(1 ms)"),
	}
	return append(cs, dlockRedis(e)...), e.Redis.Family("redis")
}

func (e *Engines) etcdContenders() ([]Contender, Family) {
	return append([]Contender{e.Etcd.Floor(), e.Etcd.Mutex()}, dlockEtcd(e)...), e.Etcd.Family()
}

func (e *Engines) zkContenders() ([]Contender, Family) {
	return append([]Contender{e.ZK.Floor(), e.ZK.Lock()}, dlockZK(e)...), e.ZK.Family()
}

func pgVersion(ctx context.Context, e *Engines) string {
	if e.PG == nil {
		return "not measured"
	}
	var v string
	if err := e.PG.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "unknown"
	}
	return v
}
