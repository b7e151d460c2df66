package bench

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/zklock"
)

// ZKElector is zklock's Election. Its Crash cuts the candidate's
// connections to the servers and refuses new ones, without closing the
// session: from the ensemble's side the process died, and its session (and
// leader node) lasts until the session timeout, which follows the TTL.
// go-zookeeper has no election recipe to compare with.
func ZKElector(family string, servers []string) Elector {
	return Elector{Name: "dlock-zk-election", Family: family, Kind: Dlock, Endpoints: servers,
		Note: "zklock.Dial(own session, timeout = TTL).Election(name).Campaign; crash = connections cut, no closeSession",
		NewCandidate: func(ctx context.Context, servers []string, ttl time.Duration, name string) (*Candidate, error) {
			cut := &cutDialer{}
			c, err := zklock.Dial(ctx, servers, &zklock.Options{SessionTimeout: ttl, Dialer: cut.dial}, dlock.WithTTL(ttl))
			if err != nil {
				return nil, err
			}
			var lead *dlock.Leadership
			return &Candidate{
				Campaign: func(ctx context.Context) (err error) { lead, err = c.Election(name).Campaign(ctx, "v"); return err },
				Resign:   func(ctx context.Context) error { return lead.Resign(ctx) },
				Crash:    cut.cut,
				Close:    func() { c.Close() },
			}, nil
		}}
}

// cutDialer dials as net.DialTimeout does until cut, which closes every
// connection it made and refuses the rest.
type cutDialer struct {
	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

var errCut = errors.New("bench: the candidate's process is gone")

func (d *cutDialer) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		return nil, errCut
	}
	c, err := net.DialTimeout(network, addr, timeout)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cutDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = true
	for _, c := range d.conns {
		c.Close()
	}
}
