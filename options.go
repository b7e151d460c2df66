package dlock

import (
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults used when an option is not given.
const (
	DefaultTTL = 15 * time.Second
	// The renew interval defaults to TTL/3 and the safety margin to TTL/10.
)

// Lower bounds of the durations an Option may set: below them a lease would
// spend its life renewing (engines count TTLs in milliseconds or seconds).
const (
	MinTTL           = 100 * time.Millisecond
	MinRenewInterval = time.Millisecond
)

// An Option changes how a client's locks behave. Options given to Open or
// NewClient apply to every mutex of the client; options given to
// Client.Mutex override them for that mutex.
type Option func(*config)

type config struct {
	ttl     time.Duration
	renew   time.Duration // 0: ttl/3
	margin  time.Duration // unless marginSet: ttl/10
	maxHold time.Duration // 0: no limit

	marginSet bool

	// The client's telemetry (client options only).
	meterProvider  metric.MeterProvider
	tracerProvider trace.TracerProvider
	logger         *slog.Logger
}

func defaultConfig() config { return config{ttl: DefaultTTL} }

// WithTTL sets how long the engine keeps a lock without renewal (default 15s,
// at least MinTTL). A crashed holder's lock is free again after at most this
// long. Engines that count TTLs in whole seconds (etcd) round it up.
func WithTTL(d time.Duration) Option { return func(c *config) { c.ttl = d } }

// WithRenewInterval sets how often a held lock is renewed (default TTL/3).
// It must be shorter than TTL minus the safety margin.
func WithRenewInterval(d time.Duration) Option { return func(c *config) { c.renew = d } }

// WithSafetyMargin sets how long before the engine could expire the lock the
// holder gives it up when renewals keep failing (default TTL/10). It covers
// clock-rate drift between client and engine and the delay of noticing. It
// must be at least 0 and less than TTL.
func WithSafetyMargin(d time.Duration) Option {
	return func(c *config) { c.margin, c.marginSet = d, true }
}

// WithMaxHold bounds how long a lease may be held: after d the lease is
// released and reported lost, renewal or not. Zero (the default) means no
// bound.
func WithMaxHold(d time.Duration) Option { return func(c *config) { c.maxHold = d } }

func (c config) with(opts []Option) config {
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// resolved fills in the derived defaults and checks the result.
func (c config) resolved() (config, error) {
	if c.ttl < MinTTL {
		return c, invalid("TTL", c.ttl, fmt.Sprintf("a duration >= %v", MinTTL))
	}
	if !c.marginSet {
		c.margin = c.ttl / 10
	}
	if c.margin < 0 || c.margin >= c.ttl {
		return c, invalid("safety margin", c.margin, fmt.Sprintf("0 <= margin < TTL (%v)", c.ttl))
	}
	if c.renew == 0 {
		c.renew = c.ttl / 3
	}
	if c.renew < MinRenewInterval || c.renew >= c.ttl-c.margin {
		return c, invalid("renew interval", c.renew, fmt.Sprintf("%v <= interval < TTL - margin (%v)", MinRenewInterval, c.ttl-c.margin))
	}
	if c.maxHold < 0 {
		return c, invalid("max hold", c.maxHold, "a duration >= 0 (0 means no limit)")
	}
	return c, nil
}
