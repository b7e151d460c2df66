package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock"
)

// counterRun is the shared-counter scenario: workers, each with its own
// connection to the engine, each incrementing a counter kept in the engine
// under the lock.
type counterRun struct {
	backend    string
	workers    int
	increments int
	ttl        time.Duration
	done       atomic.Int64 // increments completed, for progress
}

// grant is one holding of the lock by a worker.
type grant struct {
	worker    int
	token     uint64
	asked     time.Time // Lock called
	granted   time.Time // Lock returned
	releasing time.Time // Unlock called
	read      int64     // counter value read under the lock
}

type counterResult struct {
	counter, want int64
	elapsed       time.Duration
	grants        []grant // sorted by token
	wait, handoff []time.Duration
	ownerChanges  int
	orderErr      error // tokens out of step with the counter
}

func randomID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *counterRun) run(ctx context.Context) (*counterResult, error) {
	id := randomID()
	name := "dlock-demo/" + id
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Connect every worker first, so that connection set-up is not counted
	// and an unreachable engine fails before any work.
	clients := make([]*dlock.Client, r.workers)
	stores := make([]counterStore, r.workers)
	defer func() {
		for i := range clients {
			if clients[i] != nil {
				clients[i].Close()
			}
			if stores[i] != nil {
				stores[i].Close()
			}
		}
	}()
	for i := range clients {
		c, err := dlock.Open(ctx, r.backend, dlock.WithTTL(r.ttl))
		if err != nil {
			return nil, &engineError{err}
		}
		clients[i] = c
		s, err := openCounter(ctx, r.backend, id)
		if err != nil {
			return nil, &engineError{fmt.Errorf("counter store: %w", err)}
		}
		stores[i] = s
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer dcancel()
		stores[0].Delete(dctx)
	}()

	perWorker := make([][]grant, r.workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range r.workers {
		wg.Go(func() {
			gs, err := r.worker(ctx, w, clients[w].Mutex(name), stores[w])
			perWorker[w] = gs
			if err != nil {
				cancel(fmt.Errorf("worker %d: %w", w, err))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	final, err := stores[0].Get(ctx)
	if err != nil {
		return nil, &engineError{fmt.Errorf("reading the counter: %w", err)}
	}
	res := &counterResult{counter: final, want: int64(r.workers * r.increments), elapsed: elapsed}
	for _, gs := range perWorker {
		res.grants = append(res.grants, gs...)
	}
	res.analyse()
	return res, nil
}

// engineError marks failures to reach or use the engine (exit 69).
type engineError struct{ err error }

func (e *engineError) Error() string { return e.err.Error() }
func (e *engineError) Unwrap() error { return e.err }

func (r *counterRun) worker(ctx context.Context, w int, m *dlock.Mutex, s counterStore) ([]grant, error) {
	gs := make([]grant, 0, r.increments)
	for range r.increments {
		g := grant{worker: w, asked: time.Now()}
		l, err := m.Lock(ctx)
		if err != nil {
			return gs, err
		}
		g.granted, g.token = time.Now(), l.Token()
		v, err := s.Get(l.Context())
		if err == nil {
			g.read = v
			err = s.Set(l.Context(), v+1)
		}
		g.releasing = time.Now()
		uerr := l.Unlock(context.WithoutCancel(ctx))
		if err := errors.Join(err, uerr); err != nil {
			return gs, err
		}
		gs = append(gs, g)
		r.done.Add(1)
	}
	return gs, nil
}

// analyse orders the grants by token and derives the latencies. Sorted by
// token, the values read must be 0, 1, 2...: the engine granted the lock in
// token order, one holder at a time.
func (res *counterResult) analyse() {
	slices.SortFunc(res.grants, func(a, b grant) int {
		switch {
		case a.token < b.token:
			return -1
		case a.token > b.token:
			return 1
		}
		return 0
	})
	for i, g := range res.grants {
		res.wait = append(res.wait, g.granted.Sub(g.asked))
		if res.orderErr == nil && g.read != int64(i) {
			res.orderErr = fmt.Errorf("grant #%d (token %d, worker %d) read %d, want %d", i, g.token, g.worker, g.read, i)
		}
		if i == 0 {
			continue
		}
		prev := res.grants[i-1]
		if res.orderErr == nil && g.token == prev.token {
			res.orderErr = fmt.Errorf("token %d granted twice", g.token)
		}
		if g.worker != prev.worker {
			res.ownerChanges++
		}
		// A handoff: this worker was already waiting when the holder let go.
		if g.asked.Before(prev.releasing) {
			res.handoff = append(res.handoff, g.granted.Sub(prev.releasing))
		}
	}
	slices.Sort(res.wait)
	slices.Sort(res.handoff)
}

// percentile returns the p-th percentile of sorted durations (0 if none).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func (res *counterResult) grantsPerSec() float64 {
	return float64(len(res.grants)) / res.elapsed.Seconds()
}

// fmtDur prints latencies with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
