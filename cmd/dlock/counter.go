package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlockio/dlock/filelock"
)

// counterStore keeps the demo's shared counter in the lock engine itself, so
// that the demo checks the lock against the engine's own storage. Get and
// Set are deliberately separate round trips: the increment is a
// read-modify-write that only the lock makes safe.
type counterStore interface {
	Get(ctx context.Context) (int64, error)
	Set(ctx context.Context, v int64) error
	// Delete removes the counter; only one store of a run calls it.
	Delete(ctx context.Context) error
	Close() error
}

func parseURL(raw string) (*url.URL, error) { return url.Parse(raw) }

// openCounter opens a connection of its own to the engine named by
// backend and returns the counter called id on it.
func openCounter(ctx context.Context, backend, id string) (counterStore, error) {
	u, err := parseURL(backend)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "mem":
		return memCounter(u.Host + "\x00" + id), nil
	case "file":
		dir, err := fileDir(u)
		if err != nil {
			return nil, err
		}
		return fileCounter(filepath.Join(dir, "dlock-demo-"+id+".counter")), nil
	case "etcd":
		var eps []string
		for _, h := range strings.Split(u.Host, ",") {
			if !strings.Contains(strings.TrimPrefix(h, "["), ":") || strings.HasSuffix(h, "]") {
				h += ":2379" // as etcdlock does
			}
			eps = append(eps, h)
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   eps,
			DialTimeout: 5 * time.Second,
			Username:    u.User.Username(),
			Password:    password(u),
			Logger:      quietZap(),
		})
		if err != nil {
			return nil, err
		}
		return &etcdCounter{cli: cli, key: strings.TrimSuffix(u.Path, "/") + "/dlock-demo/" + id}, nil
	case "redis", "rediss", "redlock":
		// Redlock URLs list several independent masters; the counter lives
		// on the first.
		v := *u
		if v.Scheme == "redlock" {
			v.Scheme = "redis"
			if u.Query().Get("tls") == "true" {
				v.Scheme = "rediss"
			}
		}
		v.Host, _, _ = strings.Cut(u.Host, ",")
		v.RawQuery = "" // the lock driver's options, not go-redis's
		opts, err := redis.ParseURL(v.String())
		if err != nil {
			return nil, err
		}
		return &redisCounter{rdb: redis.NewClient(opts), key: "dlock-demo:" + id}, nil
	case "zk":
		conn, events, err := zk.Connect(strings.Split(u.Host, ","), 10*time.Second, zk.WithLogger(quietLogger{}))
		if err != nil {
			return nil, err
		}
		if err := awaitZK(ctx, events); err != nil {
			conn.Close()
			return nil, err
		}
		if u.User != nil {
			if err := conn.AddAuth("digest", []byte(u.User.Username()+":"+password(u))); err != nil {
				conn.Close()
				return nil, err
			}
		}
		return &zkCounter{conn: conn, path: strings.TrimSuffix(u.Path, "/") + "/dlock-demo-" + id}, nil
	}
	return nil, fmt.Errorf("no shared counter for %s:// engines (the demo supports mem, file, etcd, redis, redlock, zk)", u.Scheme)
}

func password(u *url.URL) string {
	p, _ := u.User.Password()
	return p
}

// fileDir is the lock directory of a file:// URL: its path, or the user's
// runtime directory as the filelock driver chooses it.
func fileDir(u *url.URL) (string, error) {
	if u.Host != "" && u.Host != "localhost" {
		return "", fmt.Errorf("file URL %q names host %q: want file:///abs/dir or file://", u.Redacted(), u.Host)
	}
	if u.Path != "" && u.Path != "/" {
		return u.Path, nil
	}
	return filelock.DefaultDir(), nil
}

// memCounter is a counter in this process, for mem:// engines.
type memCounter string

var (
	memCountersMu sync.Mutex // only makes each Get and Set atomic, not the increment
	memCounters   = map[memCounter]int64{}
)

func (k memCounter) Get(context.Context) (int64, error) {
	memCountersMu.Lock()
	defer memCountersMu.Unlock()
	return memCounters[k], nil
}

func (k memCounter) Set(_ context.Context, v int64) error {
	memCountersMu.Lock()
	defer memCountersMu.Unlock()
	memCounters[k] = v
	return nil
}

func (k memCounter) Delete(context.Context) error {
	memCountersMu.Lock()
	defer memCountersMu.Unlock()
	delete(memCounters, k)
	return nil
}

func (memCounter) Close() error { return nil }

// fileCounter is a decimal number in a file next to the lock files.
type fileCounter string

func (f fileCounter) Get(context.Context) (int64, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, fmt.Errorf("counter file %s is empty: a write was interrupted", f)
	}
	return strconv.ParseInt(s, 10, 64)
}

func (f fileCounter) Set(_ context.Context, v int64) error {
	if err := os.MkdirAll(filepath.Dir(string(f)), 0o700); err != nil {
		return err
	}
	return os.WriteFile(string(f), []byte(strconv.FormatInt(v, 10)+"\n"), 0o600)
}

func (f fileCounter) Delete(context.Context) error {
	err := os.Remove(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (fileCounter) Close() error { return nil }

type etcdCounter struct {
	cli *clientv3.Client
	key string
}

func (c *etcdCounter) Get(ctx context.Context) (int64, error) {
	r, err := c.cli.Get(ctx, c.key)
	if err != nil || len(r.Kvs) == 0 {
		return 0, err
	}
	return strconv.ParseInt(string(r.Kvs[0].Value), 10, 64)
}

func (c *etcdCounter) Set(ctx context.Context, v int64) error {
	_, err := c.cli.Put(ctx, c.key, strconv.FormatInt(v, 10))
	return err
}

func (c *etcdCounter) Delete(ctx context.Context) error {
	_, err := c.cli.Delete(ctx, c.key)
	return err
}

func (c *etcdCounter) Close() error { return c.cli.Close() }

type redisCounter struct {
	rdb *redis.Client
	key string
}

func (c *redisCounter) Get(ctx context.Context) (int64, error) {
	v, err := c.rdb.Get(ctx, c.key).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

func (c *redisCounter) Set(ctx context.Context, v int64) error {
	return c.rdb.Set(ctx, c.key, v, time.Hour).Err()
}

func (c *redisCounter) Delete(ctx context.Context) error { return c.rdb.Del(ctx, c.key).Err() }

func (c *redisCounter) Close() error { return c.rdb.Close() }

type zkCounter struct {
	conn *zk.Conn
	path string
}

func (c *zkCounter) Get(context.Context) (int64, error) {
	b, _, err := c.conn.Get(c.path)
	if errors.Is(err, zk.ErrNoNode) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(b), 10, 64)
}

func (c *zkCounter) Set(_ context.Context, v int64) error {
	b := []byte(strconv.FormatInt(v, 10))
	_, err := c.conn.Set(c.path, b, -1)
	if errors.Is(err, zk.ErrNoNode) {
		_, err = c.conn.Create(c.path, b, 0, zk.WorldACL(zk.PermAll))
	}
	return err
}

func (c *zkCounter) Delete(context.Context) error {
	err := c.conn.Delete(c.path, -1)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	return err
}

func (c *zkCounter) Close() error {
	c.conn.Close()
	return nil
}

// awaitZK waits for the session, so that the first Get does not race it.
func awaitZK(ctx context.Context, events <-chan zk.Event) error {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				go func() { // the library blocks if nobody drains its events
					for range events {
					}
				}()
				return nil
			}
		case <-t.C:
			return errors.New("zookeeper: no session within 10s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func quietZap() *zap.Logger { return zap.NewNop() }
