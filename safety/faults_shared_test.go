package safety

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockio/dlock/internal/testserver"
)

// TestRestartsOfSharedServersTakeTurns: the workloads of TestSafety run
// side by side on an engine's servers, each with its own fault injector.
// Their restarts must not overlap: in the full run of 17:55, two workloads
// restarted one Redis at once, one's Stop killed the process the other had
// just started ("testserver: redis exited before answering"), and that
// Start failed the engine's test from a scenario's goroutine.
func TestRestartsOfSharedServersTakeTurns(t *testing.T) {
	srv := testserver.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	e := &engine{name: "redis", ttl: 300 * time.Millisecond, servers: []*testserver.Proc{srv}}
	var in, most atomic.Int32 // restarts between Stop and the engine serving again
	e.victim = func(int) *testserver.Proc {
		n := in.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		return srv
	}
	e.settle = func(testing.TB, *testserver.Proc) { in.Add(-1) }

	const run = 2 * time.Second
	var wg sync.WaitGroup
	scs := make([]*scenario, 2)
	for i := range scs {
		scs[i] = newScenario(t, e, true, run)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithDeadline(context.Background(), monoDeadline(scs[i].until))
			defer cancel()
			injectRestarts(ctx, scs[i])
		}()
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Errorf("at most %d restarts of the shared server at once, want 1", m)
	}
	for i, s := range scs {
		if s.faults["server-restart"] == 0 {
			t.Errorf("workload %d restarted nothing in %v", i, run)
		}
	}
	if !srv.Running() {
		t.Error("the server is not running after the restarts")
	}
}
