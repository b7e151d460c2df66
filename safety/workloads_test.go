package safety

import (
	"context"
	"fmt"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/safety/internal/check"
)

// The workloads of the other primitives. Each step takes a lease, works
// under it and returns it for work to give back.

// rwStep: one step in three is a writer's, which read-modify-writes as the
// mutex workload does; the others are a reader's, which reads the counter
// and the set, works, and reads them again: the resource checks that no
// writer wrote in between and that the state is whole (one set element per
// increment). A reader checks Done before its second read, as the writer
// does before its write, and the injected pause comes just before it.
func rwStep(c *dlock.Client, cfg workerCfg, w world) func(ctx context.Context, i int) (*dlock.Lease, error) {
	rw := c.RWMutex(cfg.Lock)
	return func(ctx context.Context, i int) (*dlock.Lease, error) {
		if (cfg.ID+i)%3 == 0 {
			l, err := rw.Lock(ctx)
			if err == nil {
				readModifyWrite(l, cfg, w, i)
			}
			return l, err
		}
		l, err := rw.RLock(ctx)
		if err != nil {
			return nil, err
		}
		if _, _, ok := w.Read(cfg.ID, l.Token()); ok {
			time.Sleep(cfg.Hold) // the reader's work
			select {
			case <-l.Done():
			default:
				w.Recheck(cfg.ID, l.Token())
			}
		}
		return l, nil
	}
}

// semStep: a permit holder registers itself in the resource, which counts
// the holders in it at once, works, and leaves. It checks Done before
// registering. The injected pause comes just before it leaves: a holder
// paused longer than its TTL stays in the resource, and an engine that
// gives its permit to another lets one holder too many in.
func semStep(c *dlock.Client, cfg workerCfg, w world) func(ctx context.Context, i int) (*dlock.Lease, error) {
	sem := c.Semaphore(cfg.Lock, cfg.Limit)
	return func(ctx context.Context, i int) (*dlock.Lease, error) {
		l, err := sem.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		select {
		case <-l.Done():
		default:
			in := w.Enter(cfg.ID, l.Token())
			time.Sleep(cfg.Hold) // the holder's work, done or refused
			if in {
				w.Leave(cfg.ID, l.Token())
			}
		}
		return l, nil
	}
}

// electionStep: read the leader, campaign, proclaim a value of this term,
// read the leader again (it must be us, with that value, while our lease
// lasts), then read-modify-write the resource with the term as the token,
// as the mutex workload does. Every leader read goes to the checker, which
// also checks that no read shows a term below one already granted or read.
// Meanwhile the worker follows the election (Observe) until ctx ends; what
// it receives goes to the checker too, whose terms must never decrease
// (nobody leading aside). stop waits for it.
func electionStep(ctx context.Context, c *dlock.Client, cfg workerCfg, w world) (step func(ctx context.Context, i int) (*dlock.Lease, error), stop func()) {
	el := c.Election(cfg.Lock)
	octx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for octx.Err() == nil {
			ch, err := el.Observe(octx)
			if err != nil {
				t := time.NewTimer(cfg.TTL / 10) // an engine error under a fault: try again
				select {
				case <-t.C:
				case <-octx.Done():
					t.Stop()
				}
				continue
			}
			for lr := range ch {
				now := check.Now()
				w.Leader(check.Observation{Client: cfg.ID, Call: now, Return: now, Term: lr.Term, Value: lr.Value, Stream: true})
			}
		}
	}()
	stop = func() { cancel(); <-done }
	readLeader := func(ctx context.Context, ld *dlock.Leadership, value string) {
		o := check.Observation{Client: cfg.ID, Call: check.Now()}
		lr, err := el.Leader(ctx)
		o.Return = check.Now()
		if err != nil {
			return // an engine error under a fault: nothing was read
		}
		o.Term, o.Value = lr.Term, lr.Value
		if ld != nil {
			select {
			case <-ld.Done():
			default:
				o.WantTerm, o.WantValue = ld.Term(), value
			}
		}
		w.Leader(o)
	}
	return func(ctx context.Context, i int) (*dlock.Lease, error) {
		readLeader(ctx, nil, "")
		ld, err := el.Campaign(ctx, fmt.Sprintf("c%d", cfg.ID))
		if err != nil {
			return nil, err
		}
		value := fmt.Sprintf("c%d-%d", cfg.ID, i)
		if err := ld.Proclaim(ctx, value); err == nil {
			readLeader(ctx, ld, value)
		}
		readModifyWrite(ld.Lease, cfg, w, i)
		return ld.Lease, nil
	}, stop
}
