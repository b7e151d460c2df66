package bench

import (
	"fmt"
	"math"
	"strings"
)

// summary writes "What this run measured": for each engine with a dlock
// driver, sentences built from the same medians and same-run ratios as the
// tables below, so that they cannot disagree with them. Why the figures are
// what they are is hand-written commentary, kept apart in
// docs/BENCHMARKS-NOTES.md.
func (r *Report) summary(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("## What this run measured, in short\n\n")
	p("Every figure below is one of the tables' (medians over runs; × are same-run ratios, then their median). " +
		"Why the figures are what they are, what was tried and what each engine assumes is hand-written in " +
		"[BENCHMARKS-NOTES.md](BENCHMARKS-NOTES.md), which is not regenerated with this file.\n\n")
	for _, c := range r.Suite.Contenders {
		if c.Kind != Dlock {
			continue
		}
		var parts []string
		if s := r.uncontendedLine(c); s != "" {
			parts = append(parts, s)
		}
		if s := r.handoffLine(c); s != "" {
			parts = append(parts, s)
		}
		for _, sc := range []string{SCounter10, SCounter50} {
			if s := r.counterLine(c, sc); s != "" {
				parts = append(parts, s)
			}
		}
		if s := r.memoryLine(c); s != "" {
			parts = append(parts, s)
		}
		if len(parts) > 0 {
			p("- **%s** (%s). %s\n", c.Name, c.Family, strings.Join(parts, " "))
		}
	}
	p("\n")
}

// bestPeer names the peer of family that was best at metric in most runs.
func (r *Report) bestPeer(sc, family, metric string) string {
	count := map[string]int{}
	for run := 1; run <= r.Suite.Runs; run++ {
		if name, _, ok := r.best(run, sc, family, Peer, metric); ok {
			count[name]++
		}
	}
	top, n := "", 0
	for _, o := range r.Suite.Contenders { // contender order breaks ties
		if count[o.Name] > n {
			top, n = o.Name, count[o.Name]
		}
	}
	return top
}

func known(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) {
			return false
		}
	}
	return true
}

func (r *Report) uncontendedLine(c Contender) string {
	if !r.has(SUncontended) {
		return ""
	}
	v := r.Median(SUncontended, c.Name, MCyclesPerSec)
	if !known(v) {
		return ""
	}
	s := fmt.Sprintf("Uncontended: %s cycles/s", f(v))
	if fl := r.Ratio(SUncontended, c.Name, Floor, MCyclesPerSec); known(fl) {
		s += fmt.Sprintf(", %s the floor's", x(fl))
	}
	if peer := r.bestPeer(SUncontended, c.Family, MCyclesPerSec); peer != "" {
		s += fmt.Sprintf(", %s the best peer's (mostly %s)", x(r.Ratio(SUncontended, c.Name, Peer, MCyclesPerSec)), peer)
	}
	return s + "."
}

func (r *Report) handoffLine(c Contender) string {
	if !r.has(SHandoff) {
		return ""
	}
	v := r.Median(SHandoff, c.Name, MP50)
	if !known(v) {
		return ""
	}
	s := fmt.Sprintf("Handoff p50: %s ms", f(v))
	if fl := r.Ratio(SHandoff, c.Name, Floor, MP50); known(fl) {
		s += fmt.Sprintf(", %s the floor's %s ms", x(fl), f(r.floorMedian(SHandoff, c.Family, MP50)))
	}
	var peers []string
	for _, o := range r.Suite.Contenders {
		if o.Family == c.Family && o.Kind == Peer {
			if pv := r.Median(SHandoff, o.Name, MP50); known(pv) {
				peers = append(peers, fmt.Sprintf("%s %s ms", o.Name, f(pv)))
			}
		}
	}
	if len(peers) > 0 {
		s += "; peers: " + strings.Join(peers, ", ")
	}
	if n := r.overlaps(c.Name); n > 0 {
		s += fmt.Sprintf("; **%s waiters were granted the lock while it was held**", f(n))
	}
	return s + "."
}

func (r *Report) counterLine(c Contender, sc string) string {
	if !r.has(sc) {
		return ""
	}
	inc := r.Median(sc, c.Name, MIncPerSec)
	if !known(inc) {
		return ""
	}
	who := func(name string) string {
		return fmt.Sprintf("%s inc/s, owner changed on %s%% of increments, longest wait %s ms",
			f(r.Median(sc, name, MIncPerSec)), f(r.Median(sc, name, MOwnerChange)), f(r.Median(sc, name, MMaxWait)))
	}
	s := fmt.Sprintf("Counter, W = %d: %s", r.counterTotal(sc)/r.Suite.Config.CounterK, who(c.Name))
	if cmds := r.Median(sc, c.Name, MCmdPerInc); known(cmds) {
		s += fmt.Sprintf(", %s requests per increment", f(cmds))
	}
	if done, want := r.Median(sc, c.Name, MDone), float64(r.counterTotal(sc)); known(done) && done < want {
		s += fmt.Sprintf(", %.0f of %.0f increments done in the time allowed", done, want)
	}
	if lost := r.lostSum(sc, c.Name); lost > 0 {
		s += fmt.Sprintf(", **%s increments lost**", f(lost))
	}
	if peer := r.bestPeer(sc, c.Family, MIncPerSec); peer != "" {
		s += fmt.Sprintf("; best peer %s: %s (%s ours/theirs)", peer, who(peer), x(r.Ratio(sc, c.Name, Peer, MIncPerSec)))
	}
	return s + "."
}

func (r *Report) memoryLine(c Contender) string {
	allocs, gor := r.Median(SUncontended, c.Name, MAllocsPerCycle), r.Median(SGoroutines, c.Name, MGoroutines)
	if !known(allocs) && !known(gor) {
		return ""
	}
	s := fmt.Sprintf("Memory: %s allocations per cycle, %s goroutines per held lock", f(allocs), f(gor))
	if peer := r.bestPeer(SUncontended, c.Family, MCyclesPerSec); peer != "" {
		s += fmt.Sprintf(" (%s: %s and %s)", peer, f(r.Median(SUncontended, peer, MAllocsPerCycle)), f(r.Median(SGoroutines, peer, MGoroutines)))
	}
	return s + "."
}
