package zklock

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// sessionDialWait bounds how long an Acquire waits for a new session (for
// a TTL not asked before) before it reports the servers unavailable; it
// gives up sooner once every server has refused.
const sessionDialWait = 10 * time.Second

// perTTL is the driver of Dial and zk:// without a session timeout. A
// ZooKeeper lock lives as long as its session, so the session timeout is
// the only TTL the engine has: each lock lives in a session whose timeout
// is the TTL the lock asks for, one session per distinct TTL, made when a
// lock first asks for it.
type perTTL struct {
	servers []string
	o       Options

	closeCtx context.Context // cancelled by Close: ends dials in flight
	closeFn  context.CancelFunc
	dials    sync.WaitGroup

	mu       sync.Mutex
	sessions map[time.Duration]*ttlSession
	first    *Driver // Dial's session (dlock.DefaultTTL), closed once unused and another exists
	latest   *Driver // the newest session, for Status
	closed   bool
}

type ttlSession struct {
	ready chan struct{} // closed when d or err is set
	d     *Driver
	err   error
}

var (
	_ driver.Driver         = (*perTTL)(nil)
	_ driver.Capable        = (*perTTL)(nil)
	_ driver.Inspector      = (*perTTL)(nil)
	_ driver.RenewCoalescer = (*perTTL)(nil)
)

// CoalescesRenewals reports that each session's renewals in flight
// together share one proof (batch.go).
func (p *perTTL) CoalescesRenewals() bool { return true }

// dialPerTTL connects one session, with dlock.DefaultTTL as its timeout:
// the TTL of a client given none, and proof that the servers answer.
func dialPerTTL(ctx context.Context, servers []string, o Options) (*perTTL, error) {
	o.SessionTimeout = dlock.DefaultTTL
	d, err := dialDriver(ctx, servers, o, false)
	if err != nil {
		return nil, err
	}
	o.SessionTimeout = 0
	closeCtx, closeFn := context.WithCancel(context.Background())
	s := &ttlSession{ready: make(chan struct{}), d: d}
	close(s.ready)
	return &perTTL{
		servers: servers, o: o, closeCtx: closeCtx, closeFn: closeFn,
		sessions: map[time.Duration]*ttlSession{dlock.DefaultTTL: s},
		first:    d, latest: d,
	}, nil
}

func (p *perTTL) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	d, err := p.session(ctx, req.TTL)
	if err != nil {
		return nil, driver.Validity{}, err
	}
	return d.Acquire(ctx, req)
}

// session returns the session whose timeout is ttl, dialling it if needed.
func (p *perTTL) session(ctx context.Context, ttl time.Duration) (*Driver, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, driver.ErrClosed
		}
		s := p.sessions[ttl]
		if s == nil {
			if len(p.sessions) >= maxSessions {
				ttls := slices.Sorted(maps.Keys(p.sessions))
				p.mu.Unlock()
				return nil, driver.InvalidArgument("zklock: TTL", ttl, fmt.Sprintf("one of the %d TTLs %v: a client keeps "+
					"one ZooKeeper session per distinct TTL, at most %d; use fewer distinct TTLs, or one session timeout for all "+
					"(Options.SessionTimeout, ?session_timeout=)", len(ttls), ttls, maxSessions))
			}
			s = &ttlSession{ready: make(chan struct{})}
			p.sessions[ttl] = s
			p.dials.Add(1)
			go p.dial(ttl, s)
		}
		p.mu.Unlock()

		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if s.err != nil {
			return nil, s.err
		}
		p.mu.Lock()
		if p.sessions[ttl] != s { // closed unused since (only ever the first)
			p.mu.Unlock()
			continue
		}
		s.d.used.Store(true) // under p.mu: it will not be closed as unused now
		p.mu.Unlock()
		return s.d, nil
	}
}

// dial makes the session for ttl and, once it is up, closes Dial's first
// session if no lock ever used it.
func (p *perTTL) dial(ttl time.Duration, s *ttlSession) {
	defer p.dials.Done()
	o := p.o
	o.SessionTimeout = ttl
	ctx, cancel := context.WithTimeout(p.closeCtx, sessionDialWait)
	d, err := dialDriver(ctx, p.servers, o, true)
	cancel()
	var unused *Driver
	p.mu.Lock()
	switch {
	case err != nil:
		s.err = fmt.Errorf("zklock: a session for TTL %v: %w", ttl, err)
		if transient(err) || errors.Is(err, context.DeadlineExceeded) {
			s.err = driver.Unavailable(s.err) // no server answered (in time)
		}
		if p.closed {
			s.err = driver.ErrClosed
		}
		delete(p.sessions, ttl) // the next Acquire dials again
	case p.closed:
		s.err = driver.ErrClosed
		unused = d
	default:
		s.d = d
		p.latest = d
		if f := p.first; f != nil && !f.used.Load() {
			delete(p.sessions, dlock.DefaultTTL)
			p.first = nil
			unused = f
		}
	}
	p.mu.Unlock()
	close(s.ready)
	if unused != nil {
		unused.Close()
	}
}

func (p *perTTL) Status(ctx context.Context, name string) (driver.Status, error) {
	for {
		p.mu.Lock()
		d, closed := p.latest, p.closed
		p.mu.Unlock()
		if closed {
			return driver.Status{}, driver.ErrClosed
		}
		st, err := d.Status(ctx, name)
		select {
		case <-d.closing:
			if err != nil {
				continue // Dial's first session, closed unused under us: ask the newer one
			}
		default:
		}
		return st, err
	}
}

func (p *perTTL) Capabilities() driver.Capabilities {
	p.mu.Lock()
	var notes []string
	for _, ttl := range slices.Sorted(maps.Keys(p.sessions)) {
		if s := p.sessions[ttl]; s.d != nil {
			notes = append(notes, "TTL "+ttl.String()+": "+s.d.timeoutNote())
		}
	}
	p.mu.Unlock()
	return capabilities("one session per distinct TTL, its timeout the TTL (" + strings.Join(notes, "; ") + ")")
}

// Close closes every session, which deletes their nodes.
func (p *perTTL) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return driver.ErrClosed
	}
	p.closed = true
	p.mu.Unlock()
	p.closeFn()
	p.dials.Wait()
	p.mu.Lock()
	var ds []*Driver
	for _, s := range p.sessions {
		if s.d != nil {
			ds = append(ds, s.d)
		}
	}
	p.mu.Unlock()
	for _, d := range ds {
		d.Close()
	}
	return nil
}
