package drivertest

import (
	"time"

	"github.com/dlockio/dlock/driver"
)

// Faulter is implemented by harnesses whose drivers reach the engine through
// a fault proxy (this module's tests use internal/faultproxy), so that a
// test can slow, stall or cut the connections of one driver — all of them,
// or only those of one kind, such as a Redis client's pub/sub connection.
type Faulter interface {
	// ConnKinds names the kinds of connection a driver of this engine
	// makes that can be faulted alone ("command", "pubsub", "watch" ...).
	// The empty kind, meaning all of a driver's connections, is always
	// accepted by Fault and need not be listed.
	ConnKinds() []string
	// Fault applies f to d's connections of the given kind, current and
	// future, until undo is called. undo may be called more than once.
	Fault(d driver.Driver, kind string, f Fault) (undo func(), err error)
}

// Direction says which way a fault acts.
type Direction int

const (
	BothWays Direction = iota
	ToEngine           // requests only
	ToClient           // replies and notifications only
)

// Fault is a network fault on a driver's connections.
type Fault struct {
	// Delay is added to every byte's trip (a latency, not a throughput
	// limit).
	Delay time.Duration
	// Stall holds all traffic until the fault is undone: a partition that
	// TCP rides out, so requests time out rather than fail.
	Stall bool
	// Down resets the connections and refuses new ones until the fault is
	// undone: a dead engine, or a firewall that rejects.
	Down bool
	// Reset resets the connections once, when the fault is applied, and
	// lets new ones through at once: a blip, after which the client
	// reconnects straight away. Its undo does nothing. Dir is ignored.
	Reset bool
	Dir   Direction
}

// ConnBound is implemented by Faulter harnesses whose engine ties a held
// lock to the connection that took it, such as PostgreSQL's session-level
// advisory locks: a reset of that connection frees the lock, and the driver
// must report the loss (Done closed, ErrLockLost) rather than ride it out.
type ConnBound interface {
	LocksDieWithConnection() bool
}
