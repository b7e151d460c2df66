package zklock

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

func init() {
	dlock.Register("zk", openURL)
}

// openURL opens zk://[user:password@]h1:2181,h2:2181[/root][?session_timeout=10s].
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	var o Options
	if u.Host == "" {
		return nil, fmt.Errorf("%w: zk URL %q: want zk://host:port[,host:port...][/root]", dlock.ErrInvalidArgument, u.Redacted())
	}
	servers := strings.Split(u.Host, ",")
	for _, s := range servers {
		if s == "" {
			return nil, fmt.Errorf("%w: zk URL %q: an empty server in the host list: want zk://host:port[,host:port...][/root]", dlock.ErrInvalidArgument, u.Redacted())
		}
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		o.Auth = u.User.Username() + ":" + pw
	}
	if p := strings.TrimSuffix(u.Path, "/"); p != "" {
		o.Root = p
	}
	q := u.Query()
	for k := range q {
		if k != "session_timeout" {
			return nil, fmt.Errorf("%w: zk URL %q: unknown parameter %q (known: session_timeout)", dlock.ErrInvalidArgument, u.Redacted(), k)
		}
	}
	if v := q.Get("session_timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: zk URL %q: session_timeout = %q: want a duration > 0 such as 10s", dlock.ErrInvalidArgument, u.Redacted(), v)
		}
		o.SessionTimeout = d
	}
	return dialAny(ctx, servers, o)
}
