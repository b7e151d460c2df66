package redislock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// The URL schemes this package registers with dlock.Open (see the
// package doc's URLs section).
const (
	Scheme        = "redis"   // one node
	TLSScheme     = "rediss"  // one node, over TLS
	RedlockScheme = "redlock" // a majority of independent masters
)

// EnvPassword names the environment variable that supplies the password
// when a URL has none.
const EnvPassword = "DLOCK_REDIS_PASSWORD"

// envPasswordDeprecated is read when EnvPassword is unset or empty: the
// name this package read before every driver's variables were named
// DLOCK_<ENGINE>_<SETTING>.
const envPasswordDeprecated = "REDIS_PASSWORD"

// Timeouts of the clients made from URLs: a dead or silent server is an
// error within seconds, never a hang.
const (
	dialTimeout = 5 * time.Second
	ioTimeout   = 3 * time.Second
)

func init() {
	dlock.Register(Scheme, openURL)
	dlock.Register(TLSScheme, openURL)
	dlock.Register(RedlockScheme, openURL)
}

// openURL opens redis://[:password@]host:port[/db][?prefix=P&...],
// rediss://… (TLS) and redlock://[:password@]h1:p1,h2:p2,…[/db][?prefix=P&tls=true].
// redis:// and rediss:// accept go-redis's URL options (dial_timeout, …).
// The driver owns the clients it makes and closes them on Close.
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	q := u.Query()
	o := &Options{Prefix: q.Get("prefix")}
	q.Del("prefix")
	if err := checkPrefix("redislock: URL prefix", o.Prefix); err != nil {
		return nil, err
	}
	switch f := q.Get("fairness"); f {
	case "":
	case "fifo":
		o.Fairness = FIFO
	case "barging":
		o.Fairness = Barging
	default:
		return nil, driver.InvalidArgument("redislock: URL fairness", strconv.Quote(f), "fifo or barging")
	}
	q.Del("fairness")
	var clients []*redis.Client
	closeAll := func() {
		for _, c := range clients {
			c.Close()
		}
	}
	switch u.Scheme {
	case Scheme, TLSScheme:
		if strings.Contains(u.Host, ",") {
			return nil, driver.InvalidArgument("redislock: "+u.Scheme+":// host", strconv.Quote(u.Host),
				"one host:port (redlock:// for independent masters)")
		}
		v := *u
		v.RawQuery = q.Encode()
		opt, err := redis.ParseURL(v.String())
		if err != nil {
			return nil, driver.InvalidArgument("redislock: URL", redactErr(err, u), "a URL go-redis can parse")
		}
		tune(opt, q)
		clients = append(clients, redis.NewClient(opt))
		d, err := openSingle(ctx, clients[0], o)
		if err != nil {
			closeAll()
			return nil, err
		}
		return d, nil
	case RedlockScheme:
		hosts := strings.Split(u.Host, ",")
		if len(hosts) < 3 {
			return nil, driver.InvalidArgument("redislock: redlock:// hosts", len(hosts),
				"at least 3 independent masters (redis:// for one)")
		}
		db := 0
		if p := strings.Trim(u.Path, "/"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 {
				return nil, driver.InvalidArgument("redislock: redlock:// database", strconv.Quote(p), "a number >= 0")
			}
			db = n
		}
		useTLS := q.Get("tls") == "true"
		for _, h := range hosts {
			if h == "" || !strings.Contains(h, ":") {
				return nil, driver.InvalidArgument("redislock: redlock:// host", strconv.Quote(h), "host:port")
			}
		}
		for _, h := range hosts {
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
		d, err := openRedlock(ctx, clients, o)
		if err != nil {
			closeAll()
			return nil, err
		}
		return d, nil
	}
	return nil, driver.InvalidArgument("redislock: scheme", strconv.Quote(u.Scheme), "redis, rediss or redlock")
}

// openSingle opens a driver on c if the node answers (see ping).
func openSingle(ctx context.Context, c *redis.Client, o *Options) (*Driver, error) {
	down, err := ping(ctx, []*redis.Client{c})
	if err == nil && len(down) > 0 {
		err = down[0]
	}
	if err != nil {
		return nil, err
	}
	d, err := newSingle("redislock", c, o, true)
	if err != nil {
		return nil, err
	}
	if err := d.checkOpened(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// openRedlock opens a Redlock on clients if a majority of them answers (a
// minority outage is what it survives); the others are named in
// Capabilities' notes.
func openRedlock(ctx context.Context, clients []*redis.Client, o *Options) (*Driver, error) {
	down, err := ping(ctx, clients)
	if err != nil {
		return nil, err
	}
	quorum := majority(len(clients))
	if len(down) > len(clients)-quorum {
		return nil, driver.Unavailable(fmt.Errorf("%d of %d nodes unreachable, a majority of %d is needed: %w",
			len(down), len(clients), quorum, errors.Join(down...)))
	}
	ucs := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		ucs[i] = c
	}
	var missing []string
	for _, err := range down {
		missing = append(missing, err.Error())
	}
	d, err := newRedlock("redislock", ucs, o, true, missing)
	if err != nil {
		return nil, err
	}
	if err := d.checkOpened(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// ping checks that each node answers, accepts the password and has the
// database, so that a bad URL fails at Open with a clear error. It returns
// the errors of the nodes that did not answer, which may pass; err is a
// failure that will not (a wrong password or database).
func ping(ctx context.Context, clients []*redis.Client) (down []error, err error) {
	errs := make([]error, len(clients))
	fanOut(len(clients), func(i int) {
		if err := clients[i].Ping(ctx).Err(); err != nil {
			e := fmt.Errorf("%s: %w", clients[i].Options().Addr, explain(err))
			if transient(err) {
				e = driver.Unavailable(e)
			}
			errs[i] = e
		}
	})
	for _, err := range errs {
		switch {
		case err == nil:
		case !errors.Is(err, driver.ErrUnavailable):
			return nil, err
		default:
			down = append(down, err)
		}
	}
	return down, nil
}

// checkOpened checks the nodes' eviction policies of a driver opened from a
// URL. If that fails, the driver is closed, but not its clients: the caller
// closes them.
func (d *Driver) checkOpened(ctx context.Context) error {
	if err := d.checkNodes(ctx); err != nil {
		d.owned = false
		d.Close()
		return err
	}
	return nil
}

// tune applies what a lock needs to a client made from a URL: the password
// from the environment if the URL has none, bounded timeouts, no retries
// inside go-redis (the portable layer decides what to retry), and a dialer
// that never makes go-redis log.
func tune(opt *redis.Options, q url.Values) {
	if opt.Password == "" {
		opt.Password = os.Getenv(EnvPassword)
	}
	if opt.Password == "" {
		opt.Password = os.Getenv(envPasswordDeprecated)
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
	opt.Dialer = quietDialer(opt)
}

// quietDialer dials as go-redis does, but returns a failed dial as a
// connection whose every use fails with the dial's error. go-redis's pool
// reports a failed dial through its process-wide logger (stderr unless the
// application set another), which a library must neither write to nor
// replace; this way the error reaches the caller only, as the command's.
func quietDialer(opt *redis.Options) func(context.Context, string, string) (net.Conn, error) {
	dial := redis.NewDialer(opt)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return failedConn{err}, nil
		}
		return c, nil
	}
}

// failedConn is a connection that could not be made.
type failedConn struct{ err error }

func (c failedConn) Read([]byte) (int, error)         { return 0, c.err }
func (c failedConn) Write([]byte) (int, error)        { return 0, c.err }
func (c failedConn) Close() error                     { return nil }
func (c failedConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c failedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c failedConn) SetDeadline(time.Time) error      { return nil }
func (c failedConn) SetReadDeadline(time.Time) error  { return nil }
func (c failedConn) SetWriteDeadline(time.Time) error { return nil }

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
// the message, as written in the URL or decoded.
func redactErr(err error, u *url.URL) string {
	s := err.Error()
	if u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
		if _, p, ok := strings.Cut(u.User.String(), ":"); ok && p != "" {
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}
