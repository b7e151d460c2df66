package bench

import (
	"context"
	"sync"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/memlock"
)

// DlockWorker adapts a dlock client: the portable layer plus one driver is
// exactly what a user gets, renewal watchdog and loss monitoring included.
func DlockWorker(c *dlock.Client) Worker {
	var mu sync.Mutex
	mutexes := map[string]*dlock.Mutex{} // a Mutex per name, as the docs advise
	return WorkerFunc{
		LockFunc: func(ctx context.Context, name string) (func(context.Context) error, error) {
			mu.Lock()
			m := mutexes[name]
			if m == nil {
				m = c.Mutex(name)
				mutexes[name] = m
			}
			mu.Unlock()
			l, err := m.Lock(ctx)
			if err != nil {
				return nil, err
			}
			return l.Unlock, nil
		},
		CloseFunc: c.Close,
	}
}

// MemContenders returns the in-process driver; its engine is the process, so
// it has no floor and no peer.
func MemContenders() ([]Contender, Family) {
	e := memlock.NewEngine()
	var mu sync.Mutex
	vals := map[string]int64{}
	fam := Family{Name: "mem", Counter: memCounter{&mu, vals}}
	return []Contender{{
		Name: "dlock-mem", Family: "mem", Kind: Dlock, Note: "memlock, one engine, a client per worker",
		NewWorker: func(context.Context) (Worker, error) {
			c, err := e.NewClient()
			if err != nil {
				return nil, err
			}
			return DlockWorker(c), nil
		},
	}}, fam
}

type memCounter struct {
	mu   *sync.Mutex
	vals map[string]int64
}

// The map needs its own mutex to be memory-safe; it is taken separately for
// Get and Set, so a broken lock still loses increments.
func (m memCounter) Get(_ context.Context, key string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vals[key], nil
}

func (m memCounter) Set(_ context.Context, key string, v int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vals[key] = v
	return nil
}
