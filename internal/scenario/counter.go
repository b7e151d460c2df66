package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Counter is the shared counter, kept in the engine itself (a Redis key, an
// etcd key, a ZooKeeper node, a file next to the lock files) so that a lock
// that lets two workers in loses increments for real. Get and Set are
// separate round trips on purpose: the increment is a read-modify-write that
// only the lock makes safe. Keys are made of letters, digits, '-' and '_'.
type Counter interface {
	Get(ctx context.Context, key string) (int64, error)
	Set(ctx context.Context, key string, v int64) error
	Delete(ctx context.Context, key string) error
}

// CounterConfig is one run of SharedCounter.
type CounterConfig struct {
	Name       string // the lock
	Key        string // the counter's key (default Name)
	Increments int    // per worker
	// Max ends the run early (0: no limit). Work begun under the lock is
	// finished even so: a half-done increment would count as lost.
	Max time.Duration
	// FailFast ends the run at the first error and returns it; otherwise
	// errors are counted and the workers go on.
	FailFast bool
	// Requests, if set, counts the requests sent to the engine so far;
	// the run reports how many its increments took.
	Requests func() int64
	// Progress, if set, counts the increments done, as they are done.
	Progress *atomic.Int64
}

// Grant is one holding of the lock in the shared-counter run.
type Grant struct {
	Worker    int
	Token     uint64
	Asked     time.Time // Lock called
	Granted   time.Time // Lock returned
	Releasing time.Time // Unlock called
	Released  time.Time // Unlock returned
	Read      int64     // the counter's value read under the lock
	seq       int64     // the order increments were completed in
}

// CounterRun is what SharedCounter measured.
type CounterRun struct {
	Want, Final int64
	Elapsed     time.Duration
	// Grants are the increments made, in grant order: by token when the
	// lock has tokens, else in the order they were completed.
	Grants   []Grant
	Errors   int64
	Requests int64 // sent by the increments (and their locks); -1 if not counted
}

// StoreError is a failure to set up or read the counter in the engine, as
// opposed to a failure of the lock or of an increment during the run.
type StoreError struct {
	Op  string
	Err error
}

func (e *StoreError) Error() string { return e.Op + " the counter: " + e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

// SharedCounter is the classic shared-counter scenario, done right: each
// worker (a locker and a counter of its own, as separate processes would
// have; counters may hold one Counter for all) adds 1 to the counter
// Increments times, reading and writing it under the lock. With a working
// lock the counter ends at workers × Increments, and the tokens increase
// in the order the counter did.
func SharedCounter(ctx context.Context, lockers []Locker, counters []Counter, cfg CounterConfig) (*CounterRun, error) {
	key := cfg.Key
	if key == "" {
		key = cfg.Name
	}
	if err := counters[0].Set(ctx, key, 0); err != nil {
		return nil, &StoreError{"resetting", err}
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		counters[0].Delete(dctx, key)
	}()
	var req0 int64
	if cfg.Requests != nil {
		req0 = cfg.Requests()
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.Max > 0 {
		var stop context.CancelFunc
		runCtx, stop = context.WithTimeout(runCtx, cfg.Max)
		defer stop()
	}
	var done, errs atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(w int, err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, &err)
		if cfg.FailFast {
			cancel(fmt.Errorf("worker %d: %w", w, err))
		}
	}
	perWorker := make([][]Grant, len(lockers))
	var wg sync.WaitGroup
	start := time.Now()
	for w, l := range lockers {
		c := counters[w%len(counters)]
		wg.Go(func() {
			for range cfg.Increments {
				g := Grant{Worker: w, Asked: time.Now()}
				h, err := l.Lock(runCtx, cfg.Name)
				if err != nil {
					if runCtx.Err() != nil {
						return
					}
					fail(w, err)
					continue
				}
				g.Granted, g.Token = time.Now(), h.Token
				hctx := h.Context
				if hctx == nil {
					hctx = context.WithoutCancel(runCtx)
				}
				v, err := c.Get(hctx, key)
				if err == nil {
					g.Read = v
					err = c.Set(hctx, key, v+1)
				}
				if err == nil {
					g.seq = done.Add(1)
					if cfg.Progress != nil {
						cfg.Progress.Add(1)
					}
				}
				g.Releasing = time.Now()
				uerr := h.Unlock(context.WithoutCancel(runCtx))
				g.Released = time.Now()
				if err == nil {
					perWorker[w] = append(perWorker[w], g)
				}
				if err := errors.Join(err, uerr); err != nil {
					fail(w, err)
					if cfg.FailFast {
						return
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.FailFast {
		if err := context.Cause(runCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
	}
	r := &CounterRun{Want: int64(len(lockers) * cfg.Increments), Elapsed: elapsed, Errors: errs.Load(), Requests: -1}
	if cfg.Requests != nil {
		r.Requests = cfg.Requests() - req0
	}
	final, err := counters[0].Get(ctx, key)
	if err != nil {
		return nil, &StoreError{"reading", err}
	}
	r.Final = final
	for _, gs := range perWorker {
		r.Grants = append(r.Grants, gs...)
	}
	r.sort()
	if p := firstErr.Load(); p != nil {
		if len(r.Grants) == 0 {
			return r, *p
		}
		return r, Partial{*p}
	}
	return r, nil
}

func (r *CounterRun) tokens() bool {
	for _, g := range r.Grants {
		if g.Token == 0 {
			return false
		}
	}
	return len(r.Grants) > 0
}

func (r *CounterRun) sort() {
	byToken := r.tokens()
	slices.SortFunc(r.Grants, func(a, b Grant) int {
		if byToken && a.Token != b.Token {
			if a.Token < b.Token {
				return -1
			}
			return 1
		}
		return int(a.seq - b.seq)
	})
}

// Done is the number of increments made.
func (r *CounterRun) Done() int64 { return int64(len(r.Grants)) }

// Lost is the number of increments made that the counter does not show:
// anything but 0 is a broken lock.
func (r *CounterRun) Lost() int64 { return r.Done() - r.Final }

// PerSec is the number of increments (grants) per second.
func (r *CounterRun) PerSec() float64 { return float64(r.Done()) / r.Elapsed.Seconds() }

// Waits are the times from Lock called to Lock returned, sorted.
func (r *CounterRun) Waits() []time.Duration {
	ds := make([]time.Duration, 0, len(r.Grants))
	for _, g := range r.Grants {
		ds = append(ds, g.Granted.Sub(g.Asked))
	}
	slices.Sort(ds)
	return ds
}

// Handoffs are the times from a holder's Unlock call to the next holder's
// Lock returning, for the grants whose worker was already waiting when the
// holder let go, sorted.
func (r *CounterRun) Handoffs() []time.Duration {
	var ds []time.Duration
	for i := 1; i < len(r.Grants); i++ {
		if g, prev := r.Grants[i], r.Grants[i-1]; g.Asked.Before(prev.Releasing) {
			ds = append(ds, g.Granted.Sub(prev.Releasing))
		}
	}
	slices.Sort(ds)
	return ds
}

// Holds are the times from Lock returning to Unlock called (the critical
// section: the counter's read and write), and Unlocks the Unlock calls.
func (r *CounterRun) Holds() (holds, unlocks []time.Duration) {
	for _, g := range r.Grants {
		holds = append(holds, g.Releasing.Sub(g.Granted))
		unlocks = append(unlocks, g.Released.Sub(g.Releasing))
	}
	slices.Sort(holds)
	slices.Sort(unlocks)
	return holds, unlocks
}

// OwnerChanges is the number of grants that went to another worker than the
// grant before.
func (r *CounterRun) OwnerChanges() int {
	n := 0
	for i := 1; i < len(r.Grants); i++ {
		if r.Grants[i].Worker != r.Grants[i-1].Worker {
			n++
		}
	}
	return n
}

// OrderErr checks the grants against the counter: in token order, the
// values read must be 0, 1, 2 …, each token granted once (the engine
// granted the lock in token order, one holder at a time). It is nil for a
// lock without tokens.
func (r *CounterRun) OrderErr() error {
	if !r.tokens() {
		return nil
	}
	for i, g := range r.Grants {
		if g.Read != int64(i) {
			return fmt.Errorf("grant #%d (token %d, worker %d) read %d, want %d", i, g.Token, g.Worker, g.Read, i)
		}
		if i > 0 && g.Token == r.Grants[i-1].Token {
			return fmt.Errorf("token %d granted twice", g.Token)
		}
	}
	return nil
}

// memValues is MemCounter's store: one per process, as a memlock engine is.
var (
	memMu     sync.Mutex // only makes each Get and Set atomic, not the increment
	memValues = map[string]int64{}
)

// MemCounter keeps counters in this process, for in-process engines.
func MemCounter() Counter { return memCounter{} }

type memCounter struct{}

func (memCounter) Get(_ context.Context, key string) (int64, error) {
	memMu.Lock()
	defer memMu.Unlock()
	return memValues[key], nil
}

func (memCounter) Set(_ context.Context, key string, v int64) error {
	memMu.Lock()
	defer memMu.Unlock()
	memValues[key] = v
	return nil
}

func (memCounter) Delete(_ context.Context, key string) error {
	memMu.Lock()
	defer memMu.Unlock()
	delete(memValues, key)
	return nil
}

// FileCounter keeps each counter as a decimal number in the file
// dir/KEY.counter: next to the lock files, the file system being the engine
// of file locks.
func FileCounter(dir string) Counter { return fileCounter(dir) }

type fileCounter string

func (f fileCounter) path(key string) string { return filepath.Join(string(f), key+".counter") }

func (f fileCounter) Get(_ context.Context, key string) (int64, error) {
	b, err := os.ReadFile(f.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, fmt.Errorf("counter file %s is empty: a write was interrupted", f.path(key))
	}
	return strconv.ParseInt(s, 10, 64)
}

func (f fileCounter) Set(_ context.Context, key string, v int64) error {
	if err := os.MkdirAll(string(f), 0o700); err != nil {
		return err
	}
	return os.WriteFile(f.path(key), []byte(strconv.FormatInt(v, 10)+"\n"), 0o600)
}

func (f fileCounter) Delete(_ context.Context, key string) error {
	err := os.Remove(f.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
