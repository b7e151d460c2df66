package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/etcdlock"
	"github.com/dlockio/dlock/internal/scenario"
)

// FailoverConfig sizes the election failover scenario.
type FailoverConfig struct {
	Rounds int           // failovers measured per contender and run
	TTL    time.Duration // the leader's lease (whole seconds: etcd's unit)
	Settle time.Duration // how long the follower campaigns before the leader dies
}

// DefaultFailover: 10 failovers with a 2 s TTL.
var DefaultFailover = FailoverConfig{Rounds: 10, TTL: 2 * time.Second, Settle: 200 * time.Millisecond}

// Elector is one election implementation on etcd, measured by Failover.
type Elector struct {
	Name, Family string
	Kind         Kind
	Note         string
	Endpoints    []string
	// NewCandidate connects a candidate with an etcd client of its own
	// (a process of its own).
	NewCandidate func(ctx context.Context, endpoints []string, ttl time.Duration, name string) (*Candidate, error)
}

// Candidate is one would-be leader.
type Candidate struct {
	Campaign func(ctx context.Context) error // returns once leading
	Resign   func(ctx context.Context) error
	// Crash closes the candidate's etcd client without resigning or
	// revoking anything: from the servers' side the process died (its
	// connections closed, its lease left to expire).
	Crash func()
	Close func()
}

func newEtcdClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// DlockElector is etcdlock's Election.
func DlockElector(family string, endpoints []string) Elector {
	return Elector{Name: "dlock-etcd-election", Family: family, Kind: Dlock, Endpoints: endpoints,
		Note: "etcdlock.New(own etcd client).Election(name).Campaign; WithTTL",
		NewCandidate: func(ctx context.Context, endpoints []string, ttl time.Duration, name string) (*Candidate, error) {
			cli, err := newEtcdClient(endpoints)
			if err != nil {
				return nil, err
			}
			c, err := etcdlock.New(cli, nil, dlock.WithTTL(ttl))
			if err != nil {
				cli.Close()
				return nil, err
			}
			var lead *dlock.Leadership
			return &Candidate{
				Campaign: func(ctx context.Context) (err error) { lead, err = c.Election(name).Campaign(ctx, "v"); return err },
				Resign:   func(ctx context.Context) error { return lead.Resign(ctx) },
				Crash:    func() { cli.Close() },
				Close:    func() { c.Close(); cli.Close() },
			}, nil
		}}
}

// PeerElector is etcd's client/v3/concurrency.Election over a session of
// the same TTL.
func PeerElector(family string, endpoints []string) Elector {
	return Elector{Name: "etcd-election", Family: family, Kind: Peer, Endpoints: endpoints,
		Note: "concurrency.NewSession(own etcd client, WithTTL).NewElection(name).Campaign",
		NewCandidate: func(ctx context.Context, endpoints []string, ttl time.Duration, name string) (*Candidate, error) {
			cli, err := newEtcdClient(endpoints)
			if err != nil {
				return nil, err
			}
			s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(ttl/time.Second)))
			if err != nil {
				cli.Close()
				return nil, err
			}
			e := concurrency.NewElection(s, name)
			return &Candidate{
				Campaign: func(ctx context.Context) error { return e.Campaign(ctx, "v") },
				Resign:   func(ctx context.Context) error { return e.Resign(ctx) },
				Crash:    func() { cli.Close() },
				Close:    func() { s.Close(); cli.Close() },
			}, nil
		}}
}

// Failover measures, cfg.Rounds times: a leader leads, a second candidate
// campaigns (for cfg.Settle), the leader's process "dies" (Candidate.Crash:
// its etcd client closed, nothing resigned or revoked), and the time until
// the second candidate's Campaign returns.
func Failover(ctx context.Context, el Elector, name string, cfg FailoverConfig) (Metrics, error) {
	var lat []time.Duration
	for i := range cfg.Rounds {
		d, err := failoverRound(ctx, el, fmt.Sprintf("%s-%d", name, i), cfg)
		if err != nil {
			if len(lat) == 0 {
				return nil, err
			}
			return failoverMetrics(lat), scenario.Partial{Err: fmt.Errorf("round %d: %w", i+1, err)}
		}
		lat = append(lat, d)
	}
	return failoverMetrics(lat), nil
}

func failoverMetrics(lat []time.Duration) Metrics {
	return Metrics{MP50: ms(scenario.Percentile(lat, 0.5)), MP99: ms(scenario.Percentile(lat, 0.99)), MDone: float64(len(lat))}
}

func failoverRound(ctx context.Context, el Elector, name string, cfg FailoverConfig) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*cfg.TTL+5*time.Second)
	defer cancel()
	leader, err := el.NewCandidate(ctx, el.Endpoints, cfg.TTL, name)
	if err != nil {
		return 0, err
	}
	defer leader.Close()
	if err := leader.Campaign(ctx); err != nil {
		return 0, fmt.Errorf("first campaign: %w", err)
	}
	next, err := el.NewCandidate(ctx, el.Endpoints, cfg.TTL, name)
	if err != nil {
		return 0, err
	}
	defer next.Close()
	won := make(chan error, 1)
	go func() { won <- next.Campaign(ctx) }()
	select {
	case err := <-won:
		return 0, fmt.Errorf("the second candidate led while the first did: %v", err)
	case <-time.After(cfg.Settle):
	}
	start := time.Now()
	leader.Crash()
	if err := <-won; err != nil {
		return 0, fmt.Errorf("campaign after the leader died: %w", err)
	}
	d := time.Since(start)
	if err := next.Resign(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return d, fmt.Errorf("resign: %w", err)
	}
	return d, nil
}
