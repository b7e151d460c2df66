package redislock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// EnvPassword names the environment variable that supplies the password
// when a URL has none.
const EnvPassword = "REDIS_PASSWORD"

// Timeouts of the clients made from URLs: a dead or silent server is an
// error within seconds, never a hang.
const (
	dialTimeout = 5 * time.Second
	ioTimeout   = 3 * time.Second
)

func init() {
	dlock.Register("redis", openURL)
	dlock.Register("rediss", openURL)
	dlock.Register("redlock", openURL)
}

// openURL opens redis://[:password@]host:port[/db][?prefix=P&...],
// rediss://… (TLS) and redlock://[:password@]h1:p1,h2:p2,…[/db][?prefix=P&tls=true].
// redis:// and rediss:// accept go-redis's URL options (dial_timeout, …).
// The driver owns the clients it makes and closes them on Close.
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	q := u.Query()
	o := Options{Prefix: q.Get("prefix")}
	q.Del("prefix")
	var clients []redis.UniversalClient
	closeAll := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	switch u.Scheme {
	case "redis", "rediss":
		if strings.Contains(u.Host, ",") {
			return nil, fmt.Errorf("%w: %s: several hosts: use redlock:// for independent masters", dlock.ErrInvalidArgument, u.Redacted())
		}
		v := *u
		v.RawQuery = q.Encode()
		opt, err := redis.ParseURL(v.String())
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", dlock.ErrInvalidArgument, u.Redacted(), redactErr(err, u))
		}
		tune(opt, q)
		clients = append(clients, redis.NewClient(opt))
	case "redlock":
		hosts := strings.Split(u.Host, ",")
		if len(hosts) < 3 {
			return nil, fmt.Errorf("%w: %s: %d hosts: want at least 3 independent masters (redis:// for one)",
				dlock.ErrInvalidArgument, u.Redacted(), len(hosts))
		}
		db := 0
		if p := strings.Trim(u.Path, "/"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%w: %s: database %q: want a number >= 0", dlock.ErrInvalidArgument, u.Redacted(), p)
			}
			db = n
		}
		useTLS := q.Get("tls") == "true"
		for _, h := range hosts {
			if h == "" || !strings.Contains(h, ":") {
				return nil, fmt.Errorf("%w: %s: host %q: want host:port", dlock.ErrInvalidArgument, u.Redacted(), h)
			}
			opt := &redis.Options{Addr: h, DB: db}
			if u.User != nil {
				opt.Username = u.User.Username()
				opt.Password, _ = u.User.Password()
			}
			if useTLS {
				opt.TLSConfig = &tls.Config{ServerName: strings.Split(h, ":")[0], MinVersion: tls.VersionTLS12}
			}
			tune(opt, q)
			clients = append(clients, redis.NewClient(opt))
		}
	default:
		return nil, fmt.Errorf("%w: redislock: scheme %q", dlock.ErrInvalidArgument, u.Scheme)
	}
	// Check now that each node answers, accepts the password and has the
	// database, so that a bad URL fails at Open with a clear error.
	errs := make([]error, len(clients))
	fanOut(len(clients), func(i int) {
		if err := clients[i].Ping(ctx).Err(); err != nil {
			errs[i] = fmt.Errorf("%s: %w", clients[i].(*redis.Client).Options().Addr, explain(err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		closeAll()
		return nil, err
	}
	d, err := newDriver(clients, o, true)
	if err != nil {
		closeAll()
		return nil, err
	}
	return d, nil
}

// tune applies what a lock needs to a client made from a URL: the password
// from the environment if the URL has none, bounded timeouts, and no
// retries inside go-redis (the portable layer decides what to retry).
func tune(opt *redis.Options, q url.Values) {
	if opt.Password == "" {
		opt.Password = os.Getenv(EnvPassword)
	}
	if !q.Has("dial_timeout") {
		opt.DialTimeout = dialTimeout
	}
	if !q.Has("read_timeout") {
		opt.ReadTimeout = ioTimeout
	}
	if !q.Has("write_timeout") {
		opt.WriteTimeout = ioTimeout
	}
	if !q.Has("max_retries") {
		opt.MaxRetries = -1
	}
	opt.ContextTimeoutEnabled = true
}

// explain adds what to check to the errors a wrong URL typically causes.
func explain(err error) error {
	s := err.Error()
	switch {
	case strings.Contains(s, "WRONGPASS"), strings.Contains(s, "NOAUTH"), strings.Contains(s, "invalid password"):
		return fmt.Errorf("authentication failed (check the password in the URL or $%s): %w", EnvPassword, err)
	case strings.Contains(s, "DB index is out of range"):
		return fmt.Errorf("no such database (check the /db number of the URL): %w", err)
	}
	return err
}

// redactErr keeps a password that go-redis quotes in a parse error out of
// the message.
func redactErr(err error, u *url.URL) string {
	s := err.Error()
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}
