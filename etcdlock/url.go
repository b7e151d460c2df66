package etcdlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// The URL schemes this package registers with dlock.Open (see the package
// doc's URLs section).
const (
	Scheme    = "etcd"  // plain TCP
	TLSScheme = "etcds" // TLS
)

// Environment variables read by the URL opener. Credentials in the URL's
// user info take precedence; neither is ever logged or put in an error.
const (
	EnvUsername = "DLOCK_ETCD_USERNAME"
	EnvPassword = "DLOCK_ETCD_PASSWORD"
	EnvCACert   = "DLOCK_ETCD_CACERT" // PEM file of CAs to trust for etcds:// (default: the system's)

	// EnvUser is read when EnvUsername is not set.
	//
	// Deprecated: set EnvUsername, which follows the naming rule of every
	// driver (DLOCK_<ENGINE>_<SETTING>, with the setting named as in the
	// engine's client: clientv3.Config.Username).
	EnvUser = "DLOCK_ETCD_USER"
)

// DefaultPort is used for URL hosts given without a port.
const DefaultPort = "2379"

// dialTimeout bounds the URL opener's first connection.
const dialTimeout = 5 * time.Second

func init() {
	dlock.Register(Scheme, openURL)
	dlock.Register(TLSScheme, openURL)
}

// openURL opens an etcd:// or etcds:// URL as the package doc describes.
// The driver owns the client it makes and closes it on Close.
func openURL(ctx context.Context, u *url.URL) (driver.Driver, error) {
	cfg, prefix, err := configFromURL(u)
	if err != nil {
		return nil, err
	}
	cfg.Context = context.WithoutCancel(ctx) // the client outlives Open's ctx
	if dl, ok := ctx.Deadline(); ok {
		// clientv3.New authenticates within DialTimeout on a context of
		// its own: keep it within Open's deadline.
		if cfg.DialTimeout = min(cfg.DialTimeout, time.Until(dl)); cfg.DialTimeout <= 0 {
			return nil, fmt.Errorf("etcdlock: connect to %s: %w", strings.Join(cfg.Endpoints, ","), context.DeadlineExceeded)
		}
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdlock: connect to %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	d := newDriver(cli, &Options{Prefix: prefix}, true)
	// clientv3.New does not wait for a connection; check that the cluster
	// answers, so that a wrong address fails here and not at the first
	// lock. The key read is the prefix itself (never written), which a user
	// allowed only the prefix's keys may read.
	sctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if _, err := cli.Get(sctx, d.root, clientv3.WithCountOnly()); err != nil {
		err = fmt.Errorf("etcdlock: reach %s: %w", strings.Join(cfg.Endpoints, ","), d.engineErr(ctx, err))
		cli.Close()
		return nil, err
	}
	return d, nil
}

func configFromURL(u *url.URL) (clientv3.Config, string, error) {
	var cfg clientv3.Config
	bad := func(why string) error {
		return driver.InvalidArgument("etcdlock: URL", strconv.Quote(u.Redacted()),
			"etcd[s]://[user[:password]@]host[:port][,host[:port]...][/prefix] ("+why+")")
	}
	if u.Host == "" {
		return cfg, "", bad("no hosts")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return cfg, "", bad("query and fragment are not supported")
	}
	scheme := "http://"
	if u.Scheme == TLSScheme {
		scheme = "https://"
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f := os.Getenv(EnvCACert); f != "" {
			pem, err := os.ReadFile(f)
			if err != nil {
				return cfg, "", fmt.Errorf("etcdlock: %s: %w", EnvCACert, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return cfg, "", driver.InvalidArgument("etcdlock: "+EnvCACert, f, "a file of PEM certificates")
			}
			tc.RootCAs = pool
		}
		cfg.TLS = tc
	}
	for _, h := range strings.Split(u.Host, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			return cfg, "", bad("empty host")
		}
		if !strings.Contains(strings.TrimPrefix(h, "["), ":") || strings.HasSuffix(h, "]") {
			h += ":" + DefaultPort
		}
		cfg.Endpoints = append(cfg.Endpoints, scheme+h)
	}
	cfg.Username, cfg.Password = os.Getenv(EnvUsername), os.Getenv(EnvPassword)
	if cfg.Username == "" {
		cfg.Username = os.Getenv(EnvUser)
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	cfg.DialTimeout = dialTimeout
	cfg.Logger = zap.NewNop() // the client's own logs would be noise for a lock user
	return cfg, strings.Trim(u.Path, "/"), nil
}
