package bench

import (
	"fmt"
	"math"
	"strings"
)

// goal is one of the targets dlock set its drivers against the peers and
// the floors, judged on same-run ratios.
type goal struct {
	text   string
	figure string
	met    bool
	known  bool // false when a contender or scenario was not measured
}

func (g goal) verdict() string {
	switch {
	case !g.known:
		return "not measured"
	case g.met:
		return "**met**"
	}
	return "**not met**"
}

func (r *Report) dlockOf(family string) (Contender, bool) {
	for _, c := range r.Suite.Contenders {
		if c.Family == family && c.Kind == Dlock {
			return c, true
		}
	}
	return Contender{}, false
}

// vsBest is the median over runs of ours/best-peer for metric, the best peer
// chosen by choose (its own metric) in the same run.
func (r *Report) vsBest(sc, name, family, choose, metric string) (float64, string) {
	names := map[string]int{}
	v := r.perRun(func(run int) (float64, bool) {
		m, ok := r.sample(run, sc, name)
		if !ok {
			return 0, false
		}
		pn, pm, ok := r.best(run, sc, family, Peer, choose)
		if !ok || pm[metric] == 0 {
			return 0, false
		}
		names[pn]++
		return m[metric] / pm[metric], true
	})
	top, n := "", 0
	for k, c := range names {
		if c > n {
			top, n = k, c
		}
	}
	return v, top
}

func (r *Report) goalList() []goal {
	var gs []goal
	add := func(text, figure string, v float64, ok bool) {
		gs = append(gs, goal{text: text, figure: figure, met: ok, known: !math.IsNaN(v)})
	}
	// Every dlock driver: uncontended ≥ 0.85× its engine's floor.
	for _, c := range r.Suite.Contenders {
		if c.Kind != Dlock {
			continue
		}
		v := r.Ratio(SUncontended, c.Name, Floor, MCyclesPerSec)
		if c.Family == "mem" {
			gs = append(gs, goal{text: "dlock-mem uncontended ≥ 0.85× floor", figure: "no floor: the engine is the process", known: true, met: true})
			continue
		}
		add(fmt.Sprintf("%s uncontended ≥ 0.85× floor", c.Name), fmt.Sprintf("%s of floor (%s vs %s cycles/s)", x(v),
			f(r.Median(SUncontended, c.Name, MCyclesPerSec)), f(r.floorMedian(SUncontended, c.Family, MCyclesPerSec))), v, v >= 0.85)
	}
	for _, sfx := range []string{"", SingleSuffix} {
		setup := ""
		if sfx != "" {
			setup = "single node: "
		}
		// Redis.
		if c, ok := r.dlockOf("redis" + sfx); ok {
			v := r.Ratio(SHandoff, c.Name, Floor, MP50)
			if r.overlaps(c.Name) > 0 {
				v = math.Inf(1) // granted while held: no handoff at all
			}
			add(setup+"Redis handoff p50 ≤ 3× floor", fmt.Sprintf("%s of floor (%s ms vs %s ms; redsync %s ms, bsm %s ms)", x(v),
				f(r.Median(SHandoff, c.Name, MP50)), f(r.floorMedian(SHandoff, "redis"+sfx, MP50)), f(r.Median(SHandoff, "redsync"+sfx, MP50)), f(r.Median(SHandoff, "bsm"+sfx, MP50))), v, v <= 3)
			for _, sc := range []string{SCounter10, SCounter50} {
				inc, peer := r.vsBest(sc, c.Name, "redis"+sfx, MIncPerSec, MIncPerSec)
				wait, _ := r.vsBest(sc, c.Name, "redis"+sfx, MIncPerSec, MP99Wait)
				cmds := r.Median(sc, c.Name, MCmdPerInc)
				lost := r.lostSum(sc, c.Name)
				ok := inc >= 1 && wait <= 0.5 && cmds <= 10 && lost == 0
				add(fmt.Sprintf(setup+"Redis %s: ≥ best peer, ≤ ½ its p99 wait, ≤ 10 commands/increment", sc),
					fmt.Sprintf("%s inc/s of %s, p99 wait %s of its, %s cmds/inc (2 of them the counter's GET+SET), %s lost", x(inc), peer, x(wait), f(cmds), f(lost)),
					inc, ok && !math.IsNaN(wait))
			}
		}
		// etcd.
		if c, ok := r.dlockOf("etcd" + sfx); ok {
			v := r.perRun(func(run int) (float64, bool) {
				m, ok1 := r.sample(run, SHandoff, c.Name)
				p, ok2 := r.sample(run, SHandoff, "etcd-mutex"+sfx)
				if !ok1 || !ok2 || m[MP50] == 0 {
					return 0, false
				}
				return p[MP50] / m[MP50], true
			})
			if r.overlaps(c.Name) > 0 {
				v = 0 // granted while held: no handoff at all
			}
			add(setup+"etcd handoff p50 ≥ 10× lower than concurrency.Mutex", fmt.Sprintf("%s lower (%s ms vs %s ms)", x(v),
				f(r.Median(SHandoff, c.Name, MP50)), f(r.Median(SHandoff, "etcd-mutex"+sfx, MP50))), v, v >= 10)
			inc := r.Ratio(SCounter10, c.Name, Peer, MIncPerSec)
			add(setup+"etcd counter ≥ 2× concurrency.Mutex at 10 workers", fmt.Sprintf("%s (%s vs %s inc/s)", x(inc),
				f(r.Median(SCounter10, c.Name, MIncPerSec)), f(r.Median(SCounter10, "etcd-mutex"+sfx, MIncPerSec))), inc, inc >= 2 && r.lostSum(SCounter10, c.Name) == 0)
		}
		// ZooKeeper: ≥ 1× zk.Lock on every scenario.
		if c, ok := r.dlockOf("zk" + sfx); ok {
			var parts []string
			all, known := true, true
			for _, s := range []struct{ sc, metric string }{
				{SUncontended, MCyclesPerSec}, {SCounter10, MIncPerSec}, {SCounter50, MIncPerSec}, {SHandoff, MP50}, {SManyNames, MGrantsPerSec},
			} {
				v := r.Ratio(s.sc, c.Name, Peer, s.metric)
				if !higherBetter[s.metric] && v != 0 {
					v = 1 / v
				}
				if math.IsNaN(v) {
					known = false
				}
				all = all && v >= 1
				parts = append(parts, fmt.Sprintf("%s %s", s.sc, x(v)))
			}
			gs = append(gs, goal{text: setup + "ZooKeeper ≥ 1× zk.Lock on every scenario", figure: strings.Join(parts, ", ") + " (speed-up, >1 is better)", met: all, known: known})
		}
	}
	// A run of targets alone (-contenders 'dlock-pg$', the scale scenario)
	// has no contender.
	mem := len(r.Suite.Contenders) > 0 && !math.IsNaN(r.Median(SUncontended, r.Suite.Contenders[0].Name, MAllocsPerCycle)) && r.has(SGoroutines)
	gs = append(gs, goal{text: "Memory: allocations per cycle and goroutines per held lock for every contender", figure: "table (e)", met: mem, known: true})
	gs = append(gs, r.peerGoals()...)
	gs = append(gs, r.scaleGoals()...)
	gs = append(gs, r.primGoals()...)
	return gs
}

func (r *Report) floorMedian(sc, family, metric string) float64 {
	for _, c := range r.Suite.Contenders {
		if c.Family == family && c.Kind == Floor {
			return r.Median(sc, c.Name, metric)
		}
	}
	return math.NaN()
}

func (r *Report) overlaps(name string) float64 {
	n := 0.0
	for _, v := range r.values(SHandoff, name, MOverlap) {
		n += v
	}
	return n
}

func (r *Report) lostSum(sc, name string) float64 {
	s := 0.0
	for _, v := range r.values(sc, name, MLost) {
		s += v
	}
	return s
}

func (r *Report) goals(b *strings.Builder) {
	gs := r.goalList()
	fmt.Fprintf(b, "## Goals, judged on same-run ratios\n\n")
	fmt.Fprintf(b, "The targets dlock set its drivers when these benchmarks were written: as fast as the engine's floor allows uncontended, handoffs pushed by the engine rather than polled, and no slower than the best peer library on the same engine.\n\n")
	fmt.Fprintf(b, "| goal | figure | verdict |\n|---|---|---|\n")
	for _, g := range gs {
		fmt.Fprintf(b, "| %s | %s | %s |\n", g.text, g.figure, g.verdict())
	}
	for _, fam := range []string{"redis", "redlock", "etcd", "zk", "redis" + SingleSuffix, "etcd" + SingleSuffix, "zk" + SingleSuffix} {
		if _, ok := r.dlockOf(fam); !ok && (!strings.HasSuffix(fam, SingleSuffix) || r.Single != nil) {
			fmt.Fprintf(b, "\nNo dlock driver for %s was measured in this run (-contenders left it out), so its goals are not judged.", fam)
		}
	}
	fmt.Fprintf(b, "\n\n")
}
