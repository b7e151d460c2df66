package pglock

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/redact"
)

// The URL schemes this package registers with dlock.Open (see the package
// doc's URLs section). Both mean the same, as in libpq.
const (
	Scheme      = "postgres"
	LongScheme  = "postgresql"
	TableParam  = "dlock_table"       // query parameter: Options.Table
	EnvPassword = "DLOCK_PG_PASSWORD" // used when the URL has no password
)

// pingTimeout bounds the URL opener's first round trip.
const pingTimeout = 5 * time.Second

func init() {
	dlock.Register(Scheme, openURL)
	dlock.Register(LongScheme, openURL)
}

// openURL opens a postgres:// or postgresql:// URL as the package doc
// describes. The driver owns the pool it makes and closes it on Close.
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	cfg, table, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, fmt.Errorf("pglock: %s: %s", redact.URL(u), redact.Password(err.Error(), cfg.ConnConfig.Password))
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		d := newDriver(pool, table, false)
		return nil, fmt.Errorf("pglock: reach %s: %w", net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))),
			d.engineErr(ctx, scrubErr(err, cfg.ConnConfig.Password)))
	}
	return newDriver(pool, table, true), nil
}

func configFromURL(u *url.URL) (*pgxpool.Config, string, error) {
	c := *u
	q := c.Query()
	vals, set := q[TableParam]
	table := DefaultTable
	if set {
		table = vals[0]
		q.Del(TableParam)
		c.RawQuery = q.Encode()
	}
	if len(vals) > 1 || !validTable(table) {
		return nil, "", driver.InvalidArgument("pglock: URL parameter "+TableParam, strconv.Quote(strings.Join(vals, ",")), `one "name" or "schema.name"`)
	}
	cfg, err := pgxpool.ParseConfig(c.String())
	if err != nil {
		var pw string
		if c.User != nil {
			pw, _ = c.User.Password()
		}
		return nil, "", driver.InvalidArgument("pglock: URL", strconv.Quote(redact.URL(u)),
			"postgres://[user[:password]@]host[:port][,...][/database][?param=value&...] ("+redact.Password(err.Error(), pw)+")")
	}
	if cfg.ConnConfig.Password == "" {
		cfg.ConnConfig.Password = os.Getenv(EnvPassword)
	}
	return cfg, table, nil
}

// scrubErr is err with the password out of its text (redact.Password),
// should the client library have put it there; errors.Is and As still
// see err.
func scrubErr(err error, password string) error {
	if password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return scrubbed{msg: redact.Password(err.Error(), password), err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (s scrubbed) Error() string { return s.msg }
func (s scrubbed) Unwrap() error { return s.err }
