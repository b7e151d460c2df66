package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Report turns samples into docs/BENCHMARKS.md.
type Report struct {
	Suite   *Suite
	Samples []Sample
	Command string
	Took    time.Duration
	Engines *Engines
	Single  *Engines // the single-node servers, if measured
}

// higherBetter tells the direction of a metric for ratios.
var higherBetter = map[string]bool{MCyclesPerSec: true, MIncPerSec: true, MGrantsPerSec: true}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

func (r *Report) contender(name string) Contender {
	for _, c := range r.Suite.Contenders {
		if c.Name == name {
			return c
		}
	}
	return Contender{}
}

// values returns the metric of every successful run.
func (r *Report) values(sc, name, metric string) []float64 {
	var xs []float64
	for _, s := range r.Samples {
		if s.Scenario == sc && s.Contender == name && s.Err == "" {
			if v, ok := s.Metrics[metric]; ok {
				xs = append(xs, v)
			}
		}
	}
	return xs
}

// Median of a metric over runs; NaN if never measured.
func (r *Report) Median(sc, name, metric string) float64 {
	return median(r.values(sc, name, metric))
}

func (r *Report) sample(run int, sc, name string) (Metrics, bool) {
	for _, s := range r.Samples {
		if s.Run == run && s.Scenario == sc && s.Contender == name && s.Err == "" {
			return s.Metrics, true
		}
	}
	return nil, false
}

// ref picks, in one run, the floor of c's family or its best peer.
func (r *Report) ref(run int, sc string, c Contender, kind Kind, metric string) (float64, bool) {
	_, m, ok := r.best(run, sc, c.Family, kind, metric)
	return m[metric], ok
}

// best returns the contender of kind in family with the best metric in one
// run, and its metrics.
func (r *Report) best(run int, sc, family string, kind Kind, metric string) (string, Metrics, bool) {
	var bestName string
	var bestM Metrics
	best, found := 0.0, false
	for _, o := range r.Suite.Contenders {
		if o.Family != family || o.Kind != kind {
			continue
		}
		m, ok := r.sample(run, sc, o.Name)
		if !ok {
			continue
		}
		v, ok := m[metric]
		if !ok {
			continue
		}
		if sc == SCounter10 || sc == SCounter50 {
			// A peer that lost increments is no yardstick for speed; it is
			// reported as such in its own row. One that ran out of time
			// still has a rate.
			if m[MLost] != 0 {
				continue
			}
		}
		if !found || (higherBetter[metric] && v > best) || (!higherBetter[metric] && v < best) {
			best, found = v, true
			bestName, bestM = o.Name, m
		}
	}
	return bestName, bestM, found
}

// perRun is the median over runs of fn's figure, skipping runs where fn has
// none.
func (r *Report) perRun(fn func(run int) (float64, bool)) float64 {
	var xs []float64
	for run := 1; run <= r.Suite.Runs; run++ {
		if v, ok := fn(run); ok {
			xs = append(xs, v)
		}
	}
	return median(xs)
}

func (r *Report) counterTotal(sc string) int {
	if sc == SCounter50 {
		return 50 * r.Suite.Config.CounterK
	}
	return 10 * r.Suite.Config.CounterK
}

// Ratio is the median over runs of c's metric divided by the same run's
// floor (kind Floor) or best peer (kind Peer). For metrics where lower is
// better it is inverted, so above 1 always means c is better... except that
// latency ratios are easier to read as "times the floor": see LatencyRatio.
func (r *Report) Ratio(sc, name string, kind Kind, metric string) float64 {
	c := r.contender(name)
	if c.Kind == Floor && kind == Peer {
		return math.NaN() // the yardstick is not measured against itself
	}
	var xs []float64
	for run := 1; run <= r.Suite.Runs; run++ {
		m, ok := r.sample(run, sc, name)
		if !ok {
			continue
		}
		ref, ok := r.ref(run, sc, c, kind, metric)
		if !ok || ref == 0 {
			continue
		}
		xs = append(xs, m[metric]/ref)
	}
	return median(xs)
}

func f(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func x(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func (r *Report) errorsOf(sc, name string) string {
	var errs []string
	for _, s := range r.Samples {
		if s.Scenario == sc && s.Contender == name && s.Err+s.Note != "" {
			errs = append(errs, fmt.Sprintf("run %d: %s", s.Run, s.Err+s.Note))
		}
	}
	return strings.Join(errs, "; ")
}

func (r *Report) has(sc string) bool { return slices.Contains(r.Suite.Scenarios, sc) }

// Markdown renders the whole report.
func (r *Report) Markdown(ctx context.Context) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Benchmarks: dlock against the Go lock libraries\n\n")
	p("Generated by `bench/run.sh` (module `bench/`, command `bench/cmd/peerbench`); do not edit by hand. ")
	p("Commentary on the figures is hand-written in [BENCHMARKS-NOTES.md](BENCHMARKS-NOTES.md).\n")
	if r.Suite.Runs == 1 {
		p("Every figure is from **one run**; ratios are computed within it (against its floor and best peer of the same engine). ")
	} else {
		p("Every figure is the **median of %d runs**; ratios are computed within each run (against that run's floor and best peer of the same engine) and then their median is taken. ", r.Suite.Runs)
	}
	p("Contenders run interleaved (A B C … A B C …, the starting contender rotating per run) on the same servers.\n\n")
	p("Absolute figures depend on the machine and on what else ran on it meanwhile (below); the same-run ratios are the figures to compare.\n\n")
	r.machine(ctx, &b)
	p("## Contenders\n\n| name | engine | kind | configuration |\n|---|---|---|---|\n")
	for _, c := range r.Suite.Contenders {
		p("| %s | %s | %s | %s |\n", c.Name, c.Family, c.Kind, c.Note)
	}
	p("\nAll contenders ask for a %v TTL; no lock expires during a run. Workers of one contender share the engine connection (one go-redis client per node, one etcd client, one ZooKeeper session) but each has its own lock object (dlock client, redsync instance, etcd session …), as separate clients of a library would. Floors have no waiting primitive (a waiter spins), so they are left out of the counter scenario.\n\n", LockTTL)
	r.goals(&b)
	r.summary(&b)
	if r.has(SUncontended) {
		p("## (a) Uncontended Lock+Unlock\n\nOne worker, one name, up to %d cycles or %v per run.\n\n", r.Suite.Config.Uncontended.N, r.Suite.Config.Uncontended.Max)
		p("| contender | kind | cycles/s | p50 ms | p99 ms | × floor | × best peer |\n|---|---|---|---|---|---|---|\n")
		for _, c := range r.Suite.Contenders {
			p("| %s | %s | %s | %s | %s | %s | %s |%s\n", c.Name, c.Kind,
				f(r.Median(SUncontended, c.Name, MCyclesPerSec)), f(r.Median(SUncontended, c.Name, MP50)), f(r.Median(SUncontended, c.Name, MP99)),
				x(r.Ratio(SUncontended, c.Name, Floor, MCyclesPerSec)), x(r.Ratio(SUncontended, c.Name, Peer, MCyclesPerSec)), r.errNote(SUncontended, c.Name))
		}
		p("\n")
	}
	for _, sc := range []string{SCounter10, SCounter50} {
		if !r.has(sc) {
			continue
		}
		w := 10
		if sc == SCounter50 {
			w = 50
		}
		p("## (b) Shared counter, W = %d workers × K = %d\n\n", w, r.Suite.Config.CounterK)
		p("Each increment: Lock, GET the counter from the engine, SET it +1, Unlock. A run stops after %v; `done` below %d means the contender did not finish in time, and inc/s is then what it managed. `lost` is summed over all runs (the counter against the increments made): anything but 0 is a broken lock. `owner changed` is the share of increments made by a different worker than the one before; `cmds/inc` counts every request this process sent to the engine (lock, counter GET+SET = 2, unlock, renewals, pings) per increment.\n\n", r.Suite.Config.CounterMax, w*r.Suite.Config.CounterK)
		p("| contender | inc/s | wall s | done | lost | owner changed | p99 wait ms | max wait ms | cmds/inc | × best peer |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Suite.Contenders {
			if c.NoWait {
				continue
			}
			lost := 0.0
			for _, v := range r.values(sc, c.Name, MLost) {
				lost += v
			}
			p("| %s | %s | %s | %s | %s | %s%% | %s | %s | %s | %s |%s\n", c.Name,
				f(r.Median(sc, c.Name, MIncPerSec)), f(r.Median(sc, c.Name, MWall)), f(r.Median(sc, c.Name, MDone)), f(lost),
				f(r.Median(sc, c.Name, MOwnerChange)), f(r.Median(sc, c.Name, MP99Wait)), f(r.Median(sc, c.Name, MMaxWait)),
				f(r.Median(sc, c.Name, MCmdPerInc)), x(r.Ratio(sc, c.Name, Peer, MIncPerSec)), r.errNote(sc, c.Name))
		}
		p("\n")
	}
	if r.has(SHandoff) {
		p("## (c) Handoff latency\n\nA holder keeps the lock %v–%v (random, so a poller's phase is random), then releases while a second worker waits in Lock; the figure runs from just before the release call to the waiter's Lock returning (so it includes the release round trip). Up to %d handoffs or %v per run. The floors' waiters spin on the server, the least any lock can take.\n\n", r.Suite.Config.HoldMin, r.Suite.Config.HoldMax, r.Suite.Config.Handoff.N, r.Suite.Config.Handoff.Max)
		p("| contender | kind | p50 ms | p99 ms | p50 × floor | p50 × best peer |\n|---|---|---|---|---|---|\n")
		for _, c := range r.Suite.Contenders {
			p("| %s | %s | %s | %s | %s | %s |%s\n", c.Name, c.Kind,
				f(r.Median(SHandoff, c.Name, MP50)), f(r.Median(SHandoff, c.Name, MP99)),
				x(r.Ratio(SHandoff, c.Name, Floor, MP50)), x(r.Ratio(SHandoff, c.Name, Peer, MP50)), r.errNote(SHandoff, c.Name))
		}
		p("\n")
	}
	if r.has(SManyNames) {
		nb := r.Suite.Config.NamesBudget
		p("## (d) Many names\n\n%d goroutines (a worker each) lock and unlock random names among %d distinct ones, up to %d grants or %v per run.\n\n", r.Suite.Config.NamesG, r.Suite.Config.Names, nb.N, nb.Max)
		p("| contender | kind | grants/s | × floor | × best peer |\n|---|---|---|---|---|\n")
		for _, c := range r.Suite.Contenders {
			p("| %s | %s | %s | %s | %s |%s\n", c.Name, c.Kind, f(r.Median(SManyNames, c.Name, MGrantsPerSec)),
				x(r.Ratio(SManyNames, c.Name, Floor, MGrantsPerSec)), x(r.Ratio(SManyNames, c.Name, Peer, MGrantsPerSec)), r.errNote(SManyNames, c.Name))
		}
		p("\n")
	}
	if r.has(SUncontended) || r.has(SGoroutines) {
		p("## (e) Memory\n\nAllocations and bytes per uncontended cycle (runtime.MemStats deltas over scenario (a), so everything the process allocated meanwhile counts: client library, connection pool, a lease's watchdog); goroutines per held lock (one worker holding %d distinct names at once, after a warm-up lock).\n\n", r.Suite.Config.Held)
		p("| contender | kind | allocs/cycle | B/cycle | goroutines/held lock |\n|---|---|---|---|---|\n")
		for _, c := range r.Suite.Contenders {
			p("| %s | %s | %s | %s | %s |\n", c.Name, c.Kind, f(r.Median(SUncontended, c.Name, MAllocsPerCycle)),
				f(r.Median(SUncontended, c.Name, MBytesPerCycle)), f(r.Median(SGoroutines, c.Name, MGoroutines)))
		}
		p("\n")
	}
	r.moreSections(&b)
	return b.String()
}

func (r *Report) errNote(sc, name string) string {
	e := r.errorsOf(sc, name)
	if e == "" {
		return ""
	}
	if len(e) > 200 {
		e = e[:200] + "…"
	}
	return " errors: " + strings.ReplaceAll(e, "|", "/")
}

func (r *Report) machine(ctx context.Context, b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## Machine and versions\n\n")
	p("- %d CPUs (GOMAXPROCS %d), %s, Linux %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")))
	p("- %s\n", runtime.Version())
	if e := r.Engines; e != nil {
		p("- Redis %s (5 independent nodes, %s)\n", e.Redis.Version(ctx), strings.Join(RedisAddrs(), ", "))
		p("- etcd %s (3-member cluster, %s)\n", e.Etcd.Version(ctx), strings.Join(EtcdAddrs(), ", "))
		p("- ZooKeeper %s (3-server ensemble, %s)\n", ZKVersion(ZKAddrs()), strings.Join(ZKAddrs(), ", "))
		p("- PostgreSQL (%s)\n", pgVersion(ctx, e))
	}
	if e := r.Single; e != nil {
		p("- single-node setup (contenders and families ending in `%s`), started by the benchmark at each server's defaults: Redis %s (no config file), etcd %s (one member, default heartbeat and election timeout), ZooKeeper %s (zoo_sample.cfg's tickTime 2000); measured in %s\n",
			SingleSuffix, e.Redis.Version(ctx), e.Etcd.Version(ctx), ZKVersion(e.ZK.Addrs), r.singleRuns())
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var libs []string
		for _, d := range bi.Deps {
			switch d.Path {
			case "github.com/go-redsync/redsync/v4", "github.com/bsm/redislock", "github.com/redis/go-redis/v9",
				"go.etcd.io/etcd/client/v3", "github.com/go-zookeeper/zk":
				libs = append(libs, d.Path+" "+d.Version)
			}
		}
		p("- libraries: %s; dlock from this tree\n", strings.Join(libs, ", "))
	}
	if r.Took > 0 {
		p("- the measurement took %v\n", r.Took.Round(time.Second))
	}
	if r.Command != "" {
		p("\nCommand:\n\n```\n%s\n```\n", r.Command)
	}
	p("\n")
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func (r *Report) singleRuns() string {
	n := min(r.Suite.SingleRuns, r.Suite.Runs)
	if n == r.Suite.Runs {
		return "every run"
	}
	if n == 1 {
		return "the first run only"
	}
	return fmt.Sprintf("the first %d runs only (their figures are medians of %d)", n, n)
}
