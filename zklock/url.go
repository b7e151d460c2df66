package zklock

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// Scheme is the URL scheme of ZooKeeper (see the package doc's URLs).
const Scheme = "zk"

// Environment variables read by the URL opener for digest authentication
// when the URL has no user info. Neither is ever logged or put in an error.
const (
	EnvUsername = "DLOCK_ZK_USERNAME"
	EnvPassword = "DLOCK_ZK_PASSWORD"
)

func init() {
	dlock.Register(Scheme, openURL)
}

// openURL opens zk://[user:password@]h1:2181,h2:2181[/prefix][?session_timeout=10s],
// as the package doc's URLs section describes.
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	var o Options
	if u.Host == "" {
		return nil, driver.InvalidArgument("zk URL host", `""`, "host:port[,host:port...]")
	}
	servers := strings.Split(u.Host, ",")
	for _, s := range servers {
		if s == "" {
			return nil, driver.InvalidArgument("zk URL host", strconv.Quote(u.Host), "host:port[,host:port...], no entry empty")
		}
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		o.Auth = u.User.Username() + ":" + pw
	} else if user, pw := os.Getenv(EnvUsername), os.Getenv(EnvPassword); user != "" || pw != "" {
		o.Auth = user + ":" + pw
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" {
		o.Prefix = p
	}
	q := u.Query()
	for k := range q {
		if k != "session_timeout" {
			return nil, driver.InvalidArgument("zk URL parameter", strconv.Quote(k), "session_timeout")
		}
	}
	if v := q.Get("session_timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, driver.InvalidArgument("zk URL session_timeout", strconv.Quote(v), "a duration > 0 such as 10s")
		}
		o.SessionTimeout = d
	}
	return dialAny(ctx, servers, o)
}
