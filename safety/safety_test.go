package safety

import (
	"context"
	"flag"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dlockio/dlock/internal/testserver"
)

var full = flag.Bool("safety.full", false, "run every scenario at full length (make safety); without it a short form runs")

func TestMain(m *testing.M) {
	if cfg := os.Getenv(workerEnv); cfg != "" {
		os.Exit(childMain(cfg))
	}
	goleak.VerifyTestMain(m)
}

// How long each scenario runs on an engine with the given TTL, and how
// many workers contend. The short form needs room for one pause of 2.5 TTLs
// and for the worker processes to start on a loaded machine.
func runLength(ttl time.Duration) time.Duration {
	if *full {
		return 45 * time.Second
	}
	// Five TTLs leave a pause of 2.5 TTL room to start after a grant and end
	// before the run does, even when make test loads both cores.
	return max(5*time.Second, 5*ttl)
}

const workers = 4

// expect says what a scenario must show.
type expect int

const (
	expectSafe          expect = iota // no violation of any kind
	expectUnfencedHarm                // lock history fine; the unfenced resource shows damage if the engine expires locks
	expectLockViolation               // the checker must report the lock history illegal
)

type scenarioSpec struct {
	name   string
	fenced bool
	procs  bool     // needs worker processes (SIGSTOP/SIGKILL)
	net    bool     // needs network servers (restart, proxies)
	only   []string // run on these engines only
	gc     bool
	// partition: cuts servers apart (needs the engine's servers in network
	// namespaces); each worker reaches one server only, and holds the lock
	// for 1.5 TTL, across renewals, so that a cut finds the holder holding.
	partition bool
	expect    expect
	inject    func(ctx context.Context, s *scenario)
	// unsafe names the broken driver the in-process workers use (see
	// recDriver): "release", "shared", "limit" or "stale-leader".
	unsafe string
	// prims lists the workloads the scenario applies to ("mutex",
	// "rwmutex", "semaphore", "election"); nil means all. short: the other
	// primitives run it in the short form too (the mutex runs all).
	prims []string
	short bool
}

func (sc scenarioSpec) applies(workload string) bool {
	return sc.prims == nil || slices.Contains(sc.prims, workload)
}

var scenarios = []scenarioSpec{
	{name: "baseline", fenced: true},
	{name: "pause-holder", fenced: true, inject: injectPauses, short: true},
	{name: "pause-holder-unfenced", fenced: false, inject: injectPauses, expect: expectUnfencedHarm},
	{name: "kill-holder", fenced: true, procs: true, inject: injectKills(true), short: true},
	{name: "kill-waiter", fenced: true, procs: true, inject: injectKills(false)},
	{name: "gc-pause", fenced: true, gc: true, short: true},
	{name: "server-restart", fenced: true, net: true, inject: injectRestarts},
	{name: "server-kill", fenced: true, net: true, only: []string{"postgres"}, inject: injectServerKills},
	{name: "terminate-holder", fenced: true, net: true, only: []string{"postgres"}, inject: injectTerminations},
	{name: "partition-holder", fenced: true, net: true, inject: injectProxy("partition")},
	{name: "latency-holder", fenced: true, net: true, inject: injectProxy("latency")},
	{name: "reset-holder", fenced: true, net: true, inject: injectProxy("reset"), short: true},
	{name: "isolate-leader", fenced: true, net: true, partition: true, inject: injectIsolation(true)},
	{name: "isolate-follower", fenced: true, net: true, partition: true, inject: injectIsolation(false)},
	{name: "slow-notifications", fenced: true, net: true, only: []string{"redis", "redlock"}, inject: injectSlowNotifications},
	{name: "unsafe-release", fenced: true, only: []string{"memlock"}, inject: injectPauses, expect: expectLockViolation,
		unsafe: "release", prims: []string{"mutex", "election"}, short: true},
	{name: "unsafe-writer-as-reader", fenced: true, only: []string{"memlock"}, expect: expectLockViolation,
		unsafe: "shared", prims: []string{"rwmutex"}, short: true},
	{name: "unsafe-extra-permit", fenced: true, only: []string{"memlock"}, expect: expectLockViolation,
		unsafe: "limit", prims: []string{"semaphore"}, short: true},
	{name: "unsafe-stale-leader", fenced: true, only: []string{"memlock"}, expect: expectLockViolation,
		unsafe: "stale-leader", prims: []string{"election"}, short: true},
	// The same without fencing: the resource must show the damage too
	// (a reader's state changed under it, a holder beyond the limit).
	{name: "unsafe-writer-as-reader-unfenced", only: []string{"memlock"}, expect: expectLockViolation,
		unsafe: "shared", prims: []string{"rwmutex"}, short: true},
	{name: "unsafe-extra-permit-unfenced", only: []string{"memlock"}, expect: expectLockViolation,
		unsafe: "limit", prims: []string{"semaphore"}, short: true},
}

// TestSafety runs every scenario on every engine. Engines run side by side
// (each on its own servers) and scenarios one after the other per engine.
// The engines' subtests are started from goroutines rather than with
// t.Parallel, whose limit (-parallel, GOMAXPROCS: 2 here) would serialise
// runs that mostly wait on TTLs and pauses, not on the CPU.
func TestSafety(t *testing.T) {
	var wg sync.WaitGroup
	for _, em := range engines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(em.name, func(t *testing.T) {
				e := em.make(t)
				for _, sc := range scenarios {
					if sc.applies("mutex") {
						t.Run(sc.name, func(t *testing.T) { runScenario(t, e, sc, mutexWorkload) })
					}
				}
				// The other primitives side by side, each on a name of its own.
				var pwg sync.WaitGroup
				for _, p := range primitives {
					pwg.Add(1)
					go func() {
						defer pwg.Done()
						t.Run(p.name, func(t *testing.T) { runPrimitive(t, e, p) })
					}()
				}
				pwg.Wait()
			})
		}()
	}
	wg.Wait()
}

func runScenario(t *testing.T, e *engine, sc scenarioSpec, wl workload) {
	if sc.only != nil && !slices.Contains(sc.only, e.name) {
		t.Skipf("%v only", sc.only)
	}
	if sc.procs && e.url == "" && e.urlFor == nil {
		t.Skipf("%s lives in the test process: there is no holder process to stop or kill", e.name)
	}
	if sc.net && e.servers == nil {
		t.Skipf("%s has no server or network between client and engine", e.name)
	}
	run := runLength(e.ttl)
	if sc.partition {
		switch {
		case e.isLeader == nil:
			t.Skipf("%s has no leader and followers to cut apart", e.name)
		case e.net == nil && testserver.InCI():
			t.Fatalf("%s: servers cannot be cut apart here: %v", e.name, e.noNet)
		case e.net == nil:
			t.Skipf("%s: servers cannot be cut apart here: %v", e.name, e.noNet)
		}
		// Room for a whole round even in the short form: a holder on the
		// right server, 3 TTLs cut off, the server back in the quorum.
		run = max(run, 10*e.ttl)
	}
	s := newScenario(t, e, sc.fenced, run)
	s.workload, s.limit, s.unsafe = wl.workload, wl.limit, sc.unsafe
	s.res.SetLimit(wl.limit)
	if wl.hold != nil {
		s.hold = wl.hold(e.ttl)
	}
	if sc.partition {
		s.pin, s.hold = true, 3*e.ttl/2
	}
	inProc := (e.url == "" && e.urlFor == nil) || sc.unsafe != ""
	for i := range workers {
		s.gc = sc.gc && i == 0 // one stressed worker is enough to slow them all on 2 cores
		if inProc {
			s.startInProc()
		} else {
			s.startProc()
		}
	}
	if sc.inject != nil {
		ctx, cancel := context.WithDeadline(context.Background(), monoDeadline(s.until))
		sc.inject(ctx, s)
		cancel()
	}
	name := e.name + "/" + sc.name
	if wl.workload != "" {
		name = e.name + "/" + wl.name + "/" + sc.name
	}
	rep := s.finish(name)
	switch sc.expect {
	case expectSafe:
		if !rep.Safe() {
			t.Errorf("violations found:\n%v", rep)
		}
	case expectUnfencedHarm:
		if len(rep.Violations) > 0 {
			t.Errorf("lock violations found:\n%v", rep)
		}
		if e.expires && rep.Faults["pause"] > 0 && rep.StaleAccepted+rep.TornReads+rep.Overfull == 0 {
			t.Errorf("%s frees a paused holder's lock, yet no stale write, torn read or holder beyond the limit reached the unfenced resource:\n%v", e.name, rep)
		}
		if !e.expires && !rep.Safe() {
			t.Errorf("%s keeps a paused holder's lock, yet the resource was damaged:\n%v", e.name, rep)
		}
	case expectLockViolation:
		if len(rep.Violations) == 0 {
			t.Errorf("the checker missed the broken driver (%s):\n%v", sc.unsafe, rep)
		}
		if !sc.fenced && len(rep.Unsafe) == 0 {
			t.Errorf("the broken driver (%s) let holders in together, yet the unfenced resource shows nothing:\n%v", sc.unsafe, rep)
		}
	}
	if rep.Grants < 2 {
		t.Errorf("only %d grants, not one hand-off: the workload did not run", rep.Grants)
	}
	if sc.inject != nil && len(rep.Faults) == 0 {
		t.Errorf("the run injected no %s fault: it tested nothing of it", sc.name)
	}
}

// TestRedisRestartWithoutPersistence shows what the redis driver's
// FencingNode means: a node restarted without its data forgets both the
// lock and the fence counter, so a second holder is granted the lock while
// the first still holds it, with a smaller token. The checker must see it.
func TestRedisRestartWithoutPersistence(t *testing.T) {
	e := &engine{name: "redis-volatile", ttl: time.Second, expires: true,
		servers: []*testserver.Proc{testserver.StartRedis(t)}}
	e.urlFor = func(hosts []string) string { return "redis://" + hosts[0] + "/0" }
	s := newScenario(t, e, true, runLength(e.ttl))
	for range workers {
		s.startProc()
	}
	ctx, cancel := context.WithDeadline(context.Background(), monoDeadline(s.until))
	injectRestarts(ctx, s)
	cancel()
	rep := s.finish("redis-volatile/server-restart")
	if rep.Faults["server-restart"] > 0 && len(rep.Violations) == 0 {
		t.Errorf("a Redis node restarted empty, yet the checker saw nothing:\n%v", rep)
	}
}
