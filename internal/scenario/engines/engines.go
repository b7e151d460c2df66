// Package engines keeps the shared counter of package scenario in each
// engine dlock has a driver for, next to the locks, and finds the counter
// for a client through its driver (Of): no engine is opened twice and no URL
// is parsed again, so a client opened from etcds://, rediss:// or a URL with
// credentials keeps its counter on the same connection, TLS and all.
package engines

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/scenario"
)

// What the drivers expose of their engine (their Client, Clients, Conn and
// Dir methods).
type (
	etcdDriver  interface{ Client() *clientv3.Client }
	redisDriver interface {
		Clients() []redis.UniversalClient
	}
	zkDriver   interface{ Conn() *zk.Conn }
	fileDriver interface{ Dir() string }
)

// Of returns a counter kept in c's engine, on c's own connection: each
// worker of a scenario has a counter as it has a client.
func Of(c *dlock.Client) (scenario.Counter, error) {
	if counter, ok := OfDriver(c.Driver()); ok {
		return counter, nil
	}
	if c.Capabilities().Scope == "process" {
		return scenario.MemCounter(), nil
	}
	return nil, fmt.Errorf("no shared counter for the engine of %T (there is one for mem, file, etcd, redis, redlock, zk and postgres)", c.Driver())
}

// OfDriver returns a counter on d's own connection, for the drivers that
// expose it (etcd, redis, redlock, zk, file, postgres).
func OfDriver(d driver.Driver) (scenario.Counter, bool) {
	switch d := d.(type) {
	case etcdDriver:
		return Etcd(d.Client()), true
	case redisDriver:
		// A Redlock's nodes are independent: the counter, the protected
		// resource and not part of the lock, lives on the first.
		return Redis(d.Clients()[0]), true
	case zkDriver:
		return zkCounter{d.Conn}, true
	case fileDriver:
		return scenario.FileCounter(d.Dir()), true
	case pgDriver:
		return Postgres(d.Pool()), true
	}
	return nil, false
}

// Redis keeps counters in keys "dlock-counter:KEY", which expire after an
// hour in case a run does not delete them.
func Redis(rdb redis.UniversalClient) scenario.Counter { return redisCounter{rdb} }

type redisCounter struct{ rdb redis.UniversalClient }

func (redisCounter) key(k string) string { return "dlock-counter:" + k }

func (r redisCounter) Get(ctx context.Context, key string) (int64, error) {
	v, err := r.rdb.Get(ctx, r.key(key)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

func (r redisCounter) Set(ctx context.Context, key string, v int64) error {
	return r.rdb.Set(ctx, r.key(key), v, time.Hour).Err()
}

func (r redisCounter) Delete(ctx context.Context, key string) error {
	return r.rdb.Del(ctx, r.key(key)).Err()
}

// Etcd keeps counters in keys "dlock-counter/KEY".
func Etcd(cli *clientv3.Client) scenario.Counter { return etcdCounter{cli} }

type etcdCounter struct{ cli *clientv3.Client }

func (etcdCounter) key(k string) string { return "dlock-counter/" + k }

func (c etcdCounter) Get(ctx context.Context, key string) (int64, error) {
	r, err := c.cli.Get(ctx, c.key(key))
	if err != nil || len(r.Kvs) == 0 {
		return 0, err
	}
	return strconv.ParseInt(string(r.Kvs[0].Value), 10, 64)
}

func (c etcdCounter) Set(ctx context.Context, key string, v int64) error {
	_, err := c.cli.Put(ctx, c.key(key), strconv.FormatInt(v, 10))
	return err
}

func (c etcdCounter) Delete(ctx context.Context, key string) error {
	_, err := c.cli.Delete(ctx, c.key(key))
	return err
}

// ZKParent is the znode under which ZK keeps counters, made on first use.
const ZKParent = "/dlock-counter"

// ZK keeps counters in the data of znodes ZKParent/KEY. go-zookeeper's calls
// take no context: ctx is not honoured.
func ZK(conn *zk.Conn) scenario.Counter { return zkCounter{func() *zk.Conn { return conn }} }

// zkCounter asks for the connection at every use: a zklock driver may move
// to a newer session (zklock's Conn).
type zkCounter struct{ conn func() *zk.Conn }

func (zkCounter) path(key string) string { return ZKParent + "/" + key }

func (c zkCounter) Get(_ context.Context, key string) (int64, error) {
	b, _, err := c.conn().Get(c.path(key))
	if errors.Is(err, zk.ErrNoNode) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(b), 10, 64)
}

func (c zkCounter) Set(_ context.Context, key string, v int64) error {
	b := []byte(strconv.FormatInt(v, 10))
	_, err := c.conn().Set(c.path(key), b, -1)
	if !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	_, err = c.conn().Create(c.path(key), b, 0, zk.WorldACL(zk.PermAll))
	if errors.Is(err, zk.ErrNoNode) { // the parent, on first use
		if _, err := c.conn().Create(ZKParent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
		_, err = c.conn().Create(c.path(key), b, 0, zk.WorldACL(zk.PermAll))
	}
	return err
}

func (c zkCounter) Delete(_ context.Context, key string) error {
	err := c.conn().Delete(c.path(key), -1)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	return err
}

// QuietLogger drops go-zookeeper's log lines (connection churn, session
// ids), which would drown a benchmark's or the demo's output.
type QuietLogger struct{}

// Printf does nothing.
func (QuietLogger) Printf(string, ...any) {}
