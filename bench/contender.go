// Package bench measures dlock's drivers against the best Go lock libraries
// and against the raw engine round trips ("floors") on the same servers, in
// the same run, interleaved. The scenarios are dlock's own
// (internal/scenario, which `dlock bench` and the drivers' benchmarks run
// too); this package adds the peers, the floors, the runs and the report.
// cmd/peerbench is its command; run.sh runs it all and rewrites
// docs/BENCHMARKS.md.
//
// It is its own module so that the peer libraries never enter dlock's go.mod.
package bench

import (
	"context"

	"github.com/dlockio/dlock/internal/scenario"
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
	NewWorker func(ctx context.Context) (scenario.Locker, error)

	// NoWait marks contenders without a waiting primitive (the floors): they
	// spin, so the contended scenarios would only measure how hard they can
	// hammer the server, not a lock.
	NoWait bool
}

// Family is one engine: its counter and how to count its commands.
type Family struct {
	Name    string
	Counter scenario.Counter
	// Commands returns how many requests this process has sent to the
	// engine so far (client-side count, so the other users of the shared
	// servers do not blur it); nil if it cannot be counted.
	Commands func() int64
}

// peer adapts the lock of a library that has neither tokens nor loss
// notification: its lock function returns the unlock alone.
type peer struct {
	lock  func(ctx context.Context, name string) (func(context.Context) error, error)
	close func() error
}

func (p peer) Lock(ctx context.Context, name string) (scenario.Held, error) {
	unlock, err := p.lock(ctx, name)
	if err != nil {
		return scenario.Held{}, err
	}
	return scenario.Held{Unlock: unlock}, nil
}

func (p peer) Close() error {
	if p.close == nil {
		return nil
	}
	return p.close()
}
