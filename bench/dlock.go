package bench

import (
	"context"

	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/memlock"
)

// MemContenders returns the in-process driver; its engine is the process, so
// it has no floor and no peer.
func MemContenders() ([]Contender, Family) {
	e := memlock.NewEngine()
	fam := Family{Name: "mem", Counter: scenario.MemCounter()}
	return []Contender{{
		Name: "dlock-mem", Family: "mem", Kind: Dlock, Note: "memlock, one engine, a client per worker",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			c, err := e.NewClient()
			if err != nil {
				return nil, err
			}
			return scenario.Client(c), nil
		},
	}}, fam
}
