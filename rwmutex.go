package dlock

import (
	"context"

	"github.com/dlockio/dlock/driver"
)

// RWMutex is a named read-write lock on a client's engine: any number of
// readers (RLock) or one writer (Lock), never both. Once a writer waits,
// readers that come after it queue behind it, so a stream of readers cannot
// starve a writer. Every lease, a reader's or a writer's, has a fencing
// token; the tokens of one name are one sequence, increasing in grant order
// across both modes. A Mutex of the same name is this lock's writer side.
//
// A reader's lease is renewed, lost and released exactly like a mutex
// lease: its Done closes before the engine can let a writer in. Drivers
// whose engine cannot offer it return ErrNotSupported (see
// Capabilities.Shared).
type RWMutex struct {
	c    *Client
	name string
	cfg  config
}

// RWMutex returns the read-write lock called name. Options given here apply
// to its locks only, after the client's.
func (c *Client) RWMutex(name string, opts ...Option) *RWMutex {
	return &RWMutex{c: c, name: name, cfg: c.cfg.with(opts)}
}

// Name returns the lock's name.
func (rw *RWMutex) Name() string { return rw.name }

// RLock waits for a shared (reader's) lease, as Mutex.Lock waits for an
// exclusive one.
func (rw *RWMutex) RLock(ctx context.Context) (*Lease, error) {
	return rw.c.acquire(ctx, primRead, rw.name, rw.cfg, "rlock", driver.Request{Mode: driver.Shared, Wait: true})
}

// TryRLock makes one attempt at a shared lease, as Mutex.TryLock does.
func (rw *RWMutex) TryRLock(ctx context.Context) (*Lease, error) {
	return rw.c.acquire(ctx, primRead, rw.name, rw.cfg, "tryrlock", driver.Request{Mode: driver.Shared})
}

// Lock waits for the exclusive (writer's) lease, as Mutex.Lock does.
func (rw *RWMutex) Lock(ctx context.Context) (*Lease, error) {
	return rw.c.acquire(ctx, primWrite, rw.name, rw.cfg, "lock", driver.Request{Wait: true})
}

// TryLock makes one attempt at the exclusive lease, as Mutex.TryLock does.
func (rw *RWMutex) TryLock(ctx context.Context) (*Lease, error) {
	return rw.c.acquire(ctx, primWrite, rw.name, rw.cfg, "trylock", driver.Request{})
}
