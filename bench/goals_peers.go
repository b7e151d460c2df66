package bench

import (
	"fmt"
	"math"
)

// vsPeer is the median over runs of ours/peer's for metric, both measured
// in the same run; NaN when no run measured both.
func (r *Report) vsPeer(sc, name, peer, metric string) float64 {
	return r.perRun(func(run int) (float64, bool) {
		m, ok1 := r.sample(run, sc, name)
		p, ok2 := r.sample(run, sc, peer)
		if !ok1 || !ok2 || p[metric] == 0 {
			return 0, false
		}
		return m[metric] / p[metric], true
	})
}

// peerGoals are the goals set against named peers by the performance and
// PostgreSQL issues (17, 15), judged like the rest on same-run ratios:
// throughput ratios are ours/theirs (≥ 1 is as fast), wait ratios
// ours/theirs (≤ ½ is half as long).
func (r *Report) peerGoals() []goal {
	var gs []goal
	add := func(text, figure string, v float64, ok bool) {
		gs = append(gs, goal{text: text, figure: figure, met: ok && !math.IsNaN(v), known: !math.IsNaN(v)})
	}
	counters := []string{SCounter10, SCounter50}
	for _, sfx := range []string{"", SingleSuffix} {
		setup := ""
		if sfx != "" {
			setup = "single node: "
		}
		if c, ok := r.dlockOf("redis" + sfx); ok {
			v, peer := r.vsBest(SUncontended, c.Name, "redis"+sfx, MCyclesPerSec, MCyclesPerSec)
			add(setup+"Redis uncontended ≥ the best Redis peer", fmt.Sprintf("%s of %s's cycles/s", x(v), peer), v, v >= 1)
		}
		if c, ok := r.dlockOf("etcd" + sfx); ok {
			v := r.vsPeer(SCounter50, c.Name, "etcd-mutex"+sfx, MIncPerSec)
			add(setup+"etcd counter ≥ 1× concurrency.Mutex at 50 workers", fmt.Sprintf("%s (%s vs %s inc/s)", x(v),
				f(r.Median(SCounter50, c.Name, MIncPerSec)), f(r.Median(SCounter50, "etcd-mutex"+sfx, MIncPerSec))), v, v >= 1 && r.lostSum(SCounter50, c.Name) == 0)
		}
	}
	// Redlock against redsync on five pools at its defaults.
	if c, ok := r.dlockOf("redlock"); ok {
		v := r.vsPeer(SUncontended, c.Name, "redsync-5", MCyclesPerSec)
		add("Redlock uncontended ≥ redsync-5", fmt.Sprintf("%s (%s vs %s cycles/s)", x(v),
			f(r.Median(SUncontended, c.Name, MCyclesPerSec)), f(r.Median(SUncontended, "redsync-5", MCyclesPerSec))), v, v >= 1)
		for _, sc := range counters {
			inc := r.vsPeer(sc, c.Name, "redsync-5", MIncPerSec)
			wait := r.vsPeer(sc, c.Name, "redsync-5", MP99Wait)
			add(fmt.Sprintf("Redlock %s ≥ redsync-5, p99 wait ≤ ½ of its", sc), fmt.Sprintf("%s inc/s, p99 wait %s of its, %s lost", x(inc), x(wait), f(r.lostSum(sc, c.Name))),
				inc, inc >= 1 && wait <= 0.5 && r.lostSum(sc, c.Name) == 0)
		}
	}
	// file: many names against bare flock.
	if c, ok := r.dlockOf("file"); ok {
		v := r.Ratio(SManyNames, c.Name, Floor, MGrantsPerSec)
		add("dlock-file many names ≥ 0.8× floor", fmt.Sprintf("%s of floor (%s vs %s grants/s)", x(v),
			f(r.Median(SManyNames, c.Name, MGrantsPerSec)), f(r.floorMedian(SManyNames, "file", MGrantsPerSec))), v, v >= 0.8)
	}
	// PostgreSQL (issue 15): handoff against the floor's round trip (half
	// its uncontended lock+unlock cycle), counters against cirello.io/pglock.
	if c, ok := r.dlockOf("postgres"); ok {
		v := r.perRun(func(run int) (float64, bool) {
			m, ok1 := r.sample(run, SHandoff, c.Name)
			fl, ok2 := r.sample(run, SUncontended, "floor-postgres")
			if !ok1 || !ok2 || fl[MP50] == 0 {
				return 0, false
			}
			return m[MP50] / (fl[MP50] / 2), true
		})
		add("PostgreSQL handoff p50 ≤ 3× the floor's round trip", fmt.Sprintf("%s (%s ms; the floor's cycle p50 %s ms is two round trips)", x(v),
			f(r.Median(SHandoff, c.Name, MP50)), f(r.floorMedian(SUncontended, "postgres", MP50))), v, v <= 3)
		for _, sc := range counters {
			inc := r.vsPeer(sc, c.Name, "cirello-pglock", MIncPerSec)
			add(fmt.Sprintf("PostgreSQL %s exact and ≥ 10× cirello.io/pglock", sc), fmt.Sprintf("%s inc/s, %s lost", x(inc), f(r.lostSum(sc, c.Name))),
				inc, inc >= 10 && r.lostSum(sc, c.Name) == 0)
		}
	}
	return gs
}
