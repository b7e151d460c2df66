package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
)

func randomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// engineError marks failures to reach or use the engine (exit 69).
type engineError struct{ err error }

func (e *engineError) Error() string { return e.err.Error() }
func (e *engineError) Unwrap() error { return e.err }

// runCounter runs the shared-counter scenario on backend: workers, each
// with a client (a connection) of its own, each adding 1 increments times
// to a counter kept in the engine, under the lock. Every client is opened
// before any work, so that connection set-up is not counted and an
// unreachable engine fails first; the first error ends the run.
func runCounter(ctx context.Context, backend string, workers, increments int, ttl time.Duration, progress *atomic.Int64) (*scenario.CounterRun, error) {
	lockers := make([]scenario.Locker, 0, workers)
	counters := make([]scenario.Counter, 0, workers)
	defer func() {
		for _, l := range lockers {
			l.Close()
		}
	}()
	for range workers {
		c, err := openWithin(ctx, backend, dlock.WithTTL(ttl))
		if err != nil {
			return nil, &engineError{err}
		}
		lockers = append(lockers, scenario.Client(c))
		counter, err := engines.Of(c)
		if err != nil {
			return nil, &engineError{fmt.Errorf("counter store: %w", err)}
		}
		counters = append(counters, counter)
	}
	id := randomID()
	r, err := scenario.SharedCounter(ctx, lockers, counters, scenario.CounterConfig{
		Name: "dlock-demo/" + id, Key: "dlock-demo-" + id,
		Increments: increments, FailFast: true, Progress: progress,
	})
	var se *scenario.StoreError
	if errors.As(err, &se) {
		return nil, &engineError{err}
	}
	return r, err
}
