package dlock

import (
	"context"

	"github.com/dlockio/dlock/driver"
)

// Semaphore is a named counting semaphore on a client's engine: at most N
// holders at once ("at most 5 workers call the payment API"). Each
// Acquire returns a *Lease for one permit, renewed, lost and released
// exactly like a mutex lease; a crashed holder's permit comes back when its
// TTL runs out. Tokens of one name increase in grant order across permits.
//
// Every client must use the same N for a name: a driver that sees the name
// held or awaited with another N returns an error matching
// ErrInvalidArgument naming both, never a mix. Drivers whose engine cannot
// offer semaphores return ErrNotSupported (see Capabilities.Semaphore).
type Semaphore struct {
	c    *Client
	name string
	n    int
	cfg  config
}

// Semaphore returns the semaphore called name with n permits (n >= 1; a
// smaller n makes Acquire return an error matching ErrInvalidArgument).
// Options given here apply to its permits only, after the client's.
func (c *Client) Semaphore(name string, n int, opts ...Option) *Semaphore {
	return &Semaphore{c: c, name: name, n: n, cfg: c.cfg.with(opts)}
}

// Name returns the semaphore's name.
func (s *Semaphore) Name() string { return s.name }

// N returns the number of permits.
func (s *Semaphore) N() int { return s.n }

// Acquire waits for a permit, as Mutex.Lock waits for the lock.
func (s *Semaphore) Acquire(ctx context.Context) (*Lease, error) { return s.acquire(ctx, true) }

// TryAcquire makes one attempt at a permit and returns an error matching
// ErrNotAcquired at once if all N are held, as Mutex.TryLock does.
func (s *Semaphore) TryAcquire(ctx context.Context) (*Lease, error) { return s.acquire(ctx, false) }

func (s *Semaphore) acquire(ctx context.Context, wait bool) (*Lease, error) {
	op := "acquire"
	if !wait {
		op = "tryacquire"
	}
	if s.n < 1 {
		return nil, wrap(s.name, op, invalid("n", s.n, "a number of permits >= 1"))
	}
	return s.c.acquire(ctx, primSemaphore, s.name, s.cfg, op, driver.Request{Limit: s.n, Wait: wait})
}
