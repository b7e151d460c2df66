// Package bench measures dlock's drivers against the best Go lock libraries
// and against the raw engine round trips ("floors") on the same servers, in
// the same run, interleaved. cmd/peerbench is its command; run.sh runs it all
// and rewrites docs/BENCHMARKS.md.
//
// It is its own module so that the peer libraries never enter dlock's go.mod.
package bench

import (
	"context"
	"time"
)

// Kind says what a contender is for the ratios: ours, a peer library, or the
// raw engine round trip that no lock can beat.
type Kind string

// The kinds of contender.
const (
	Dlock Kind = "dlock"
	Peer  Kind = "peer"
	Floor Kind = "floor"
)

// Contender is one lock implementation on one engine family.
type Contender struct {
	Name   string // short, unique: the column in every table
	Family string // contenders are ranked against peers and the floor of the same family
	Kind   Kind
	Note   string // how it is configured, for the report

	// NewWorker makes the lock object one worker (one would-be process)
	// uses. Workers of one contender share the engine connection but nothing
	// else, as separate clients of one library would.
	NewWorker func(ctx context.Context) (Worker, error)

	// NoWait marks contenders without a waiting primitive (the floors): they
	// spin, so the contended scenarios would only measure how hard they can
	// hammer the server, not a lock.
	NoWait bool
}

// Worker takes locks by name for one worker.
type Worker interface {
	// Lock blocks until name is held or ctx is done, and returns the
	// function that releases it.
	Lock(ctx context.Context, name string) (unlock func(context.Context) error, err error)
	Close() error
}

// Counter is the shared counter of scenario (b), kept in the engine itself so
// that a lock that lets two workers in loses increments for real.
type Counter interface {
	Get(ctx context.Context, key string) (int64, error)
	Set(ctx context.Context, key string, v int64) error
}

// Family is one engine: its counter and how to count its commands.
type Family struct {
	Name    string
	Counter Counter
	// Commands returns how many requests this process has sent to the
	// engine so far (client-side count, so the other users of the shared
	// servers do not blur it); nil if it cannot be counted.
	Commands func() int64
}

// WorkerFunc adapts a pair of functions to Worker.
type WorkerFunc struct {
	LockFunc  func(ctx context.Context, name string) (func(context.Context) error, error)
	CloseFunc func() error
}

// Lock calls LockFunc.
func (w WorkerFunc) Lock(ctx context.Context, name string) (func(context.Context) error, error) {
	return w.LockFunc(ctx, name)
}

// Close calls CloseFunc if set.
func (w WorkerFunc) Close() error {
	if w.CloseFunc == nil {
		return nil
	}
	return w.CloseFunc()
}

// Budget bounds one measurement in count and in time.
type Budget struct {
	N   int
	Max time.Duration
}
