// Package driver defines the contract between the portable dlock package and
// the engines behind it.
//
// Applications use the portable package github.com/dlockio/dlock instead; this
// package is for people writing drivers. A driver makes the engine's own moves
// (take a lock, wait for it the way the engine lets one wait, renew it, release
// it) and reports what the engine said. It does not retry, validate arguments,
// renew on a timer or decide when a lock is lost on the clock: the portable
// layer does all of that, once, for every driver.
package driver

import (
	"context"
	"strconv"
	"time"
)

// CleanupTimeout bounds one engine request that cleans up after a failure or
// a cancelled wait (a queue entry, a half-taken key). Such a request runs
// without the caller's cancellation, which is often what failed: see
// CleanupContext. A driver that cannot clean up within it retries in the
// background until it can, or until it is closed.
const CleanupTimeout = 2 * time.Second

// CleanupContext returns the context for a cleanup request made on behalf
// of a call whose context is ctx: ctx's values, not its cancellation, and
// CleanupTimeout.
func CleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
}

// Driver is one connection (or session) to an engine. The portable layer calls
// its methods from many goroutines at once.
type Driver interface {
	// Acquire takes the lock req.Name for req.TTL.
	//
	// With req.Wait false it makes one attempt and returns ErrNotAcquired if
	// someone else holds the lock. With req.Wait true it waits, using the
	// engine's own means of waking (a watch, a notification, a queue), until it
	// holds the lock or ctx is done; it must not poll on a fixed interval.
	//
	// If ctx ends first Acquire returns ctx's error and, before returning,
	// removes anything it left on the engine (a queue entry, a half-made key)
	// using a context that is not the cancelled one.
	//
	// On success the returned Validity says from when the engine's TTL for this
	// hold is known to run: the time just before the request that started or
	// last refreshed it was sent. A zero Validity stands for the TTL asked,
	// from just before Acquire was called; a TTL <= 0 with Since set says no
	// time is left (the portable layer then renews once to prove the lock
	// still held, or gives it back).
	Acquire(ctx context.Context, req Request) (Lock, Validity, error)

	// Close releases the connection. Locks still held are left to expire or to
	// be dropped by the engine with the session; the portable layer releases
	// what it holds before calling Close. Close must return within about a
	// second whatever the engine does, and leave no goroutine behind.
	Close() error
}

// Request says what to acquire: a lock (Limit 0) in a Mode, or one of
// Limit permits of a semaphore.
type Request struct {
	Name string        // any bytes; the driver encodes it for its engine
	TTL  time.Duration // how long the engine keeps the lock without renewal
	Wait bool          // wait for the lock (Lock) or try once (TryLock)

	// Mode is Exclusive (the zero value: a mutex, or a read-write lock's
	// writer) or Shared (a read-write lock's reader). An Exclusive request
	// and a Shared one for the same name contend as writer and reader: a
	// Mutex is the exclusive side of the read-write lock of its name.
	Mode Mode

	// Limit, when above 0, asks for one of Limit permits of the semaphore
	// Name (Mode is then Exclusive): at most Limit holders at once. 0 asks
	// for a lock. A driver that sees the name held or awaited under another
	// Limit (or as a lock) must refuse with an error matching
	// ErrInvalidArgument that names both limits, never mix them.
	Limit int

	// Value, for an Exclusive lock (Limit 0) of a driver with
	// Capabilities.Election, is kept by the engine with the lock from the
	// moment it is granted (a leader's value), for Observer to report. A
	// driver without Election must refuse a non-empty Value with
	// ErrNotSupported.
	Value string
}

// Mode says how a lock is wanted.
type Mode int

const (
	// Exclusive: one holder, and no Shared holder.
	Exclusive Mode = iota
	// Shared: any number of Shared holders, and no Exclusive holder. Once an
	// Exclusive request waits, Shared requests that come after it queue
	// behind it (no writer starvation).
	Shared
)

func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "exclusive"
	case Shared:
		return "shared"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Validity is the window in which the engine promises the lock to its holder:
// it keeps the lock at least until Since+TTL, measured on the engine's clock
// from a moment no earlier than Since on ours. Since must carry a monotonic
// clock reading (time.Now()).
type Validity struct {
	Since time.Time
	TTL   time.Duration
}

// Lock is one granted lock. Its methods may be called concurrently with each
// other by the portable layer: Renew from the renewal timer, Lost from a
// goroutine that waits on it; Release is called after any Renew in flight
// has returned.
type Lock interface {
	// Token is the fencing token: for one lock name it strictly increases in
	// the order the engine granted the lock, across modes and permits (a
	// reader's, a writer's and a permit's tokens are one sequence per
	// name). It is never 0.
	Token() uint64

	// Renew extends the lock by another TTL. It returns an error matching
	// ErrLockLost if the engine no longer holds the lock for this owner (key
	// gone, owned by someone else, session expired) and changes nothing; any
	// other error is an engine or network failure after which the lock may
	// still be held.
	Renew(ctx context.Context) (Validity, error)

	// Release gives the lock up if, and only if, it is still this owner's. It
	// returns an error matching ErrLockLost if it was not, having changed
	// nothing. After a failed Release the portable layer calls it again (in
	// the background, until it succeeds or the client closes), so a repeat
	// must be safe. If the engine is unreachable for good the driver must
	// still see to it that the lock is freed within its TTL.
	//
	// A repeat (or a resent request) that finds the lock already released
	// by this owner's own earlier attempt returns nil where the driver can
	// prove that the release was its own (etcd: the lease still alive;
	// ZooKeeper: the session still alive; Redis: the note a release leaves
	// for a TTL), and an error matching ErrLockLost where it cannot tell
	// its own release from a loss (PostgreSQL, whose locks end with their
	// session; etcd and ZooKeeper when the lease or session has ended
	// since, saying that the outcome is unknown). Either way the lock is
	// not held afterwards; drivertest's ConnectionReset/ReleaseReplyLost
	// checks the nil case.
	Release(ctx context.Context) error

	// Lost returns a channel that is closed when the engine reports that the
	// lock is gone (a deleted key, an expired session). Drivers whose engine
	// cannot tell return nil; the portable layer then learns of a loss from
	// Renew and from the clock.
	Lost() <-chan struct{}
}

// LossNotifier is implemented by Locks that can report their loss by a
// call instead of a channel. The portable layer prefers it to Lost: a
// channel costs it a goroutine per held lock, a call costs nothing until the
// loss, so a client may hold many thousands of locks (watch the engine once
// per connection or session, not once per lock).
type LossNotifier interface {
	// NotifyLost arranges for lost to be called once when the engine reports
	// the lock gone, as Lost's channel would be closed; at once (or soon, in
	// a goroutine of the driver's) if it is gone already. lost returns at
	// once and may be called with the driver's locks held. After a
	// successful Release it need not be called. NotifyLost is called at most
	// once per Lock, before any Renew or Release.
	NotifyLost(lost func())
}

// RenewCoalescer is implemented by drivers whose Lock.Renew coalesces the
// Renew calls in flight at the same time into few engine requests (one
// script, pipeline, transaction or keep-alive for many locks: a "group
// commit"). The portable layer then schedules the renewals of one client's
// leases on a common grid (a quarter of the renewal interval: a lease renews
// up to that much early), so that they come together and a client holding N
// locks spends a few requests per interval on them, not N.
type RenewCoalescer interface {
	CoalescesRenewals() bool
}

// AsyncRenewer is implemented by Locks that can report a renewal's outcome
// by a call. The portable layer prefers it to Renew: a Renew holds a
// goroutine until the engine answers, which for a driver that batches
// renewals (RenewCoalescer) means a goroutine per lock blocked for a round
// trip on every renewal wave; RenewAsync holds none, so a client renewing
// many thousands of locks at once spends a few goroutines on it, not one
// per lock.
type AsyncRenewer interface {
	// RenewAsync starts a renewal, exactly as Renew would, and returns
	// without waiting for the engine. done is called exactly once, with
	// what Renew would have returned, when the engine answers or the
	// attempt fails: possibly before RenewAsync returns, possibly in a
	// goroutine of the driver's; done returns at once. ctx bounds the
	// attempt as Renew's does (it always has a deadline). The portable
	// layer stops waiting for done when ctx ends, so a done that comes
	// after that is ignored; it must still come, and a Release may be
	// called before it does (both are owner-checked, as after a Renew cut
	// short by its ctx).
	RenewAsync(ctx context.Context, done func(Validity, error))
}

// ConnNotifier is implemented by drivers that can tell when they lose
// their connection (or session) to the engine and when they have one
// again, for the client's log.
type ConnNotifier interface {
	// NotifyConn arranges for f to be called on every such change: up false
	// when the driver lost its connection (it goes on trying), true when it
	// is connected again; detail says which server or why, and never holds
	// a credential. f returns at once. It is called at most once, before
	// any Acquire.
	NotifyConn(f func(up bool, detail string))
}

// Fencing says how strong a driver's fencing tokens are.
type Fencing int

const (
	// FencingNone: the driver has no usable token.
	FencingNone Fencing = iota
	// FencingProcess: tokens increase only while the process (or one engine
	// instance without persistence) lives.
	FencingProcess
	// FencingNode: tokens increase as long as the engine node keeps its data;
	// a failover or a restart without persistence can repeat a token.
	FencingNode
	// FencingStrong: tokens come from a linearizable, replicated log (etcd
	// revision, ZooKeeper zxid) and survive failover.
	FencingStrong
)

func (f Fencing) String() string {
	switch f {
	case FencingNone:
		return "none"
	case FencingProcess:
		return "process"
	case FencingNode:
		return "node"
	case FencingStrong:
		return "strong"
	}
	return "unknown"
}

// Capabilities describes what a driver promises. Drivers report it through
// the optional Capable interface.
type Capabilities struct {
	Fencing Fencing
	FIFO    bool   // waiters are granted the lock in the order they asked
	Scope   string // who can share the lock: "process", "host", "cluster"
	Notes   string // what the engine assumes and what failover can break

	// Shared: the driver grants Mode Shared requests (read-write locks).
	// Semaphore: the driver grants requests with a Limit (semaphores).
	// The portable layer refuses what a driver does not say it supports
	// with ErrNotSupported; a driver given such a request anyway must
	// return ErrNotSupported too, never treat it as a mutex.
	Shared    bool
	Semaphore bool
	// Election: the driver keeps Request.Value with an exclusive lock, its
	// Locks implement ValueSetter and the driver implements Observer.
	Election bool
}

// ValueSetter is implemented by the Locks of a driver with
// Capabilities.Election.
type ValueSetter interface {
	// SetValue replaces the value kept with the lock if, and only if, the
	// lock is still this owner's; otherwise it returns an error matching
	// ErrLockLost and changes nothing.
	SetValue(ctx context.Context, value string) error
}

// Holder is a lock's exclusive holder as an observer sees it: its token and
// the value kept with its lock. The zero Holder means nobody holds it.
type Holder struct {
	Token uint64
	Value string
}

// Observer is implemented by drivers with Capabilities.Election.
type Observer interface {
	// Holder returns the exclusive holder of name now, the zero Holder if
	// nobody (or only Shared holders) holds it.
	Holder(ctx context.Context, name string) (Holder, error)

	// Observe returns a channel that receives name's holder now and then
	// after every change: a new holder, a new value, nobody. A slow reader
	// may miss states in between but always receives the latest one; the
	// holders' tokens never decrease (the zero Holder aside). The driver keeps observing across
	// reconnections; it closes the channel when ctx ends or the driver is
	// closed, and leaves no goroutine behind.
	Observe(ctx context.Context, name string) (<-chan Holder, error)
}

// Capable is implemented by drivers that describe their guarantees.
type Capable interface {
	Capabilities() Capabilities
}

// Status is what an engine can tell about a lock without taking it.
type Status struct {
	Held    bool
	Token   uint64        // the holder's token, if Held (the newest holder's, if several)
	TTLLeft time.Duration // time until the engine drops the holder's lock; 0 if unknown
	Waiters int           // -1 if the engine cannot tell
	Holders int           // how many hold it: readers or permits in use, 1 for one exclusive holder; 0 if unknown
	Mode    Mode          // how the holders hold it, if Held
	Limit   int           // the semaphore's number of permits, if it is one and the engine can tell
}

// Inspector is implemented by drivers that can report a lock's status.
type Inspector interface {
	Status(ctx context.Context, name string) (Status, error)
}

// Lister is implemented by drivers that can enumerate the locks of their
// engine.
type Lister interface {
	// List returns the locks held or awaited now whose names start with
	// prefix, in the byte order of their names. A name the engine keeps only
	// hashed (too long for it: see internal/lockname) is listed under its
	// engine name ("~" and a hash) and only when prefix is empty.
	List(ctx context.Context, prefix string) ([]Listed, error)
}

// Listed is one lock of a List.
type Listed struct {
	Name   string
	Status Status
}

// WaitRenewal runs r's RenewAsync and waits for its outcome, or for ctx to
// end (then it returns ctx's error, unless the answer is already in): a
// driver's Renew, so that Renew and RenewAsync are one code path.
func WaitRenewal(ctx context.Context, r AsyncRenewer) (Validity, error) {
	type outcome struct {
		v   Validity
		err error
	}
	ch := make(chan outcome, 1)
	r.RenewAsync(ctx, func(v Validity, err error) { ch <- outcome{v, err} })
	select {
	case o := <-ch:
		return o.v, o.err
	case <-ctx.Done():
		select {
		case o := <-ch:
			return o.v, o.err
		default:
			return Validity{}, ctx.Err()
		}
	}
}
