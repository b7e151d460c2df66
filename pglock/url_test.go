package pglock

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/testserver"
)

func TestConfigFromURL(t *testing.T) {
	t.Setenv(EnvPassword, "")
	for _, tc := range []struct {
		url, host, user, pw, db, table string
		port                           uint16
	}{
		{"postgres://app:s3cret@db.internal:6432/appdb?sslmode=disable", "db.internal", "app", "s3cret", "appdb", DefaultTable, 6432},
		{"postgresql://app@db.internal/appdb?sslmode=disable&dlock_table=locks.tokens", "db.internal", "app", "", "appdb", "locks.tokens", 5432},
		{"postgres://u@127.0.0.1/?sslmode=disable&dlock_table=t", "127.0.0.1", "u", "", "", "t", 5432},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		cfg, table, err := configFromURL(u)
		if err != nil {
			t.Fatalf("%s: %v", tc.url, err)
		}
		cc := cfg.ConnConfig
		if cc.Host != tc.host || cc.Port != tc.port || cc.User != tc.user || cc.Password != tc.pw || table != tc.table ||
			(tc.db != "" && cc.Database != tc.db) {
			t.Errorf("%s: host %q port %d user %q password %q db %q table %q", tc.url, cc.Host, cc.Port, cc.User, cc.Password, cc.Database, table)
		}
		if _, ok := cc.RuntimeParams[TableParam]; ok {
			t.Errorf("%s: %s passed on to the server", tc.url, TableParam)
		}
	}
}

func TestURLPasswordFromEnvironment(t *testing.T) {
	t.Setenv(EnvPassword, "fromenv")
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", "/nonexistent")
	u, _ := url.Parse("postgres://app@db.internal/appdb")
	cfg, _, err := configFromURL(u)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConnConfig.Password != "fromenv" {
		t.Errorf("password %q, want the one of %s", cfg.ConnConfig.Password, EnvPassword)
	}
	u, _ = url.Parse("postgres://app:inurl@db.internal/appdb")
	if cfg, _, _ = configFromURL(u); cfg.ConnConfig.Password != "inurl" {
		t.Errorf("password %q, want the URL's first", cfg.ConnConfig.Password)
	}
}

func TestBadURLs(t *testing.T) {
	for _, raw := range []string{
		"postgres://app:s3cret@db.internal/appdb?dlock_table=",
		"postgres://app:s3cret@db.internal/appdb?dlock_table=a.b.c",
		"postgres://app:s3cret@db.internal/appdb?dlock_table=a&dlock_table=b",
		"postgres://app:s3cret@db.internal:notaport/appdb",
		"postgres://app:s3cret@db.internal/appdb?sslmode=sometimes",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := dlock.Open(ctx, raw)
		cancel()
		if !errors.Is(err, dlock.ErrInvalidArgument) {
			t.Errorf("Open(%s) = %v, want ErrInvalidArgument", raw, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%s): the password is in the error: %v", raw, err)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dlock.Open(ctx, "postgres://app:s3cret@127.0.0.1:1/appdb?sslmode=disable&connect_timeout=2")
	if err == nil {
		t.Fatal("Open of a closed port succeeded")
	}
	if !errors.Is(err, driver.ErrUnavailable) {
		t.Errorf("Open of a closed port = %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("the password is in the error: %v", err)
	}
}

func TestOpen(t *testing.T) {
	raw := testserver.Postgres(t)
	for _, scheme := range []string{Scheme, LongScheme} {
		u, _ := url.Parse(raw)
		u.Scheme = scheme
		q := u.Query()
		q.Set(TableParam, testTable)
		u.RawQuery = q.Encode()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := dlock.Open(ctx, u.String(), dlock.WithTTL(5*time.Second))
		if err != nil {
			cancel()
			t.Fatalf("Open(%s): %v", u.Redacted(), err)
		}
		err = dlock.Do(ctx, c, "dlocktest/TestOpen/"+scheme, func(ctx context.Context, l *dlock.Lease) error {
			if l.Token() == 0 {
				t.Errorf("token 0")
			}
			return nil
		})
		if err != nil {
			t.Errorf("Do: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		cancel()
	}
}

func TestKey(t *testing.T) {
	// SHA-256("a") = ca978112ca1bbdca…: the first 8 bytes, big-endian.
	if got, want := Key("a"), int64(-0x3568_7eed_35e4_4236); got != want {
		t.Errorf("Key(\"a\") = %#x, want %#x", got, want)
	}
	if Key("a") == Key("b") || Key("") == Key("\x00") {
		t.Error("distinct names share a key")
	}
}
