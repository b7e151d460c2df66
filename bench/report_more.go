package bench

import (
	"fmt"
	"math"
	"strings"
)

// The report's sections and goals for the scenarios of one client per
// engine (scale, rw, semaphore) and for election failover.

func (r *Report) scaleGoals() []goal {
	if !r.has(SScale) {
		return nil
	}
	var gs []goal
	for _, t := range r.Suite.Targets {
		if !r.measured(SScale, t.Name) {
			continue
		}
		n := r.Median(SScale, t.Name, MScaleN)
		if math.IsNaN(n) {
			gs = append(gs, goal{text: t.Name + " scale", figure: r.errNote(SScale, t.Name)})
			continue
		}
		var parts []string
		met := true
		check := func(ok bool, format string, a ...any) {
			s := fmt.Sprintf(format, a...)
			if !ok {
				s = "**" + s + "**"
			}
			met = met && ok
			parts = append(parts, s)
		}
		g := r.Median(SScale, t.Name, MGoroutines)
		check(g <= 0.01, "%s goroutines/lock", f(g))
		h := r.Median(SScale, t.Name, MHeapPerLock)
		check(h <= 2048, "%s B heap/lock", f(h))
		if t.Count != nil {
			req, sent := r.Median(SScale, t.Name, MReqPerRenew), r.Median(SScale, t.Name, MSentPerRenew)
			limit := n/100 + 50
			if t.SentIsRequests {
				check(sent <= limit, "%s requests/renewal interval sent by this process (≤ %s; the server counts %s commands, those run inside the scripts included)", f(sent), f(limit), f(req))
			} else {
				check(req <= limit, "%s requests/renewal interval (≤ %s; %s sent by this process)", f(req), f(limit), f(sent))
			}
		}
		rel := r.Median(SScale, t.Name, MReleaseMs)
		check(rel <= 1000, "release %s ms", f(rel))
		if t.Floor != nil {
			v := r.Median(SScale, t.Name, MGrantsXFloor)
			check(v >= 0.8, "grants %s of the floor (%s vs %s/s)", x(v), f(r.Median(SScale, t.Name, MGrantsPerSec)), f(r.Median(SScale, t.Name, MFloorGrants)))
		}
		if lost := r.Median(SScale, t.Name, MLostHolding); lost > 0 {
			check(false, "%s locks lost (%s of them before the last grant), so the per-lock figures are of the rest", f(lost), f(r.Median(SScale, t.Name, MLostTaking)))
		}
		text := fmt.Sprintf("%s scale: %s locks, ≤ 0.01 goroutines and ≤ 2 KiB heap per lock", t.Name, f(n))
		if t.Count != nil {
			text += ", renewal ≤ N/100 + 50 requests per interval"
		}
		text += ", release all ≤ 1 s"
		if t.Floor != nil {
			text += ", grants ≥ 0.8× floor"
		}
		gs = append(gs, goal{text: text, figure: strings.Join(parts, ", "), met: met, known: true})
	}
	return gs
}

func (r *Report) primGoals() []goal {
	var gs []goal
	if r.has(SRW) {
		for _, t := range r.Suite.Targets {
			if !r.measured(SRW, t.Name) {
				continue
			}
			v := r.Median(SRW, t.Name, MReadXMutex)
			both := r.sum(SRW, t.Name, MMaxReaderWrite)
			if math.IsNaN(v) {
				gs = append(gs, goal{text: t.Name + " RW readers ≥ 5× mutex", figure: "–" + r.errNote(SRW, t.Name), known: !strings.Contains(r.errorsOf(SRW, t.Name), "not supported"), met: false})
				continue
			}
			gs = append(gs, goal{text: t.Name + " RW: 10 readers ≥ 5× the mutex (10 workers), never a reader with a writer",
				figure: fmt.Sprintf("%s (%s reads/s vs %s cycles/s); writer p99 wait %s ms among readers; %s reader/writer overlaps",
					x(v), f(r.Median(SRW, t.Name, MReadPerSec)), f(r.Median(SRW, t.Name, MMutexPerSec)), f(r.Median(SRW, t.Name, MWriterP99)), f(both)),
				met: v >= 5 && both == 0, known: true})
		}
	}
	if r.has(SSemaphore) {
		for _, t := range r.Suite.Targets {
			v := r.Median(SSemaphore, t.Name, MPermitXMutex)
			if math.IsNaN(v) {
				continue
			}
			over := r.sum(SSemaphore, t.Name, MOverPermit)
			gs = append(gs, goal{text: fmt.Sprintf("%s semaphore: never more than n = %d holders", t.Name, r.Suite.Prim.Permits),
				figure: fmt.Sprintf("at most %s in use; %s the mutex's throughput (%s vs %s cycles/s)", f(r.max(SSemaphore, t.Name, MMaxInUse)), x(v),
					f(r.Median(SSemaphore, t.Name, MPermitPerSec)), f(r.Median(SSemaphore, t.Name, MMutexPerSec))),
				met: over == 0, known: true})
		}
	}
	if r.has(SFailover) {
		ttl := r.Suite.Fail.TTL
		for _, e := range r.Suite.Electors {
			name := ElectorName(e)
			if e.Kind != Dlock || !r.measured(SFailover, name) {
				continue
			}
			p99 := r.Median(SFailover, name, MP99)
			if !strings.HasPrefix(e.Family, "etcd") {
				// No peer: go-zookeeper has no election recipe.
				gs = append(gs, goal{text: fmt.Sprintf("%s failover p99 ≤ TTL + 1 s (%v)", name, ttl+1e9),
					figure: fmt.Sprintf("p99 %s ms, p50 %s ms", f(p99), f(r.Median(SFailover, name, MP50))),
					met:    p99 <= float64((ttl + 1e9).Milliseconds()), known: !math.IsNaN(p99)})
				continue
			}
			peer := r.Median(SFailover, "etcd-election"+strings.TrimPrefix(e.Family, "etcd"), MP99)
			gs = append(gs, goal{text: fmt.Sprintf("%s failover p99 ≤ TTL + 1 s (%v) and ≤ concurrency.Election's", name, ttl+1e9),
				figure: fmt.Sprintf("p99 %s ms, p50 %s ms; concurrency.Election p99 %s ms", f(p99), f(r.Median(SFailover, name, MP50)), f(peer)),
				met:    p99 <= float64((ttl+1e9).Milliseconds()) && p99 <= peer, known: !math.IsNaN(p99) && !math.IsNaN(peer)})
		}
	}
	return gs
}

func (r *Report) sum(sc, name, metric string) float64 {
	s := 0.0
	for _, v := range r.values(sc, name, metric) {
		s += v
	}
	return s
}

func (r *Report) max(sc, name, metric string) float64 {
	m := math.NaN()
	for _, v := range r.values(sc, name, metric) {
		if math.IsNaN(m) || v > m {
			m = v
		}
	}
	return m
}

func (r *Report) runsOf(sc string) string {
	n := 0
	for _, s := range r.Samples {
		if s.Scenario == sc && s.Run > n {
			n = s.Run
		}
	}
	if n == 1 {
		return "one run"
	}
	return fmt.Sprintf("medians of %d runs", n)
}

func (r *Report) moreSections(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	if r.has(SRW) {
		c := r.Suite.Prim
		p("## (f) Read-write lock\n\nOne dlock client per engine shared by every worker (one process; %s). Readers: %d goroutines take a read lease of one name, hold it %v (the work) and release it, up to %d cycles or %v; the mutex: the same %d goroutines on a Mutex of another name, the same hold. Then a writer locks every %v while the %d readers keep coming, for %v: its wait (p99) and the number of times a reader and the writer held together (counted in the process, from grant to release; must be 0).\n\n",
			r.runsOf(SRW), c.Readers, c.Hold, c.Budget.N, c.Budget.Max, c.Readers, c.Writer, c.Readers, c.Budget.Max)
		p("| client | reads/s | mutex cycles/s | × mutex | writer locks | writer wait p99 ms | reader with writer |\n|---|---|---|---|---|---|---|\n")
		for _, t := range r.measuredTargets(SRW) {
			p("| %s | %s | %s | %s | %s | %s | %s |%s\n", t.Name, f(r.Median(SRW, t.Name, MReadPerSec)), f(r.Median(SRW, t.Name, MMutexPerSec)),
				x(r.Median(SRW, t.Name, MReadXMutex)), f(r.Median(SRW, t.Name, MWriterN)), f(r.Median(SRW, t.Name, MWriterP99)), f(r.sum(SRW, t.Name, MMaxReaderWrite)), r.errNote(SRW, t.Name))
		}
		p("\n")
	}
	if r.has(SSemaphore) {
		c := r.Suite.Prim
		p("## (g) Semaphore\n\nOne client per engine (%s): %d goroutines Acquire one of n = %d permits, hold it %v and release it, up to %d cycles or %v; against the same %d goroutines on a Mutex. `max in use` is the most holders counted at once in the process between a grant and its release (never above n).\n\n",
			r.runsOf(SSemaphore), c.Workers, c.Permits, c.Hold, c.Budget.N, c.Budget.Max, c.Workers)
		p("| client | permits/s | mutex cycles/s | × mutex | max in use |\n|---|---|---|---|---|\n")
		for _, t := range r.measuredTargets(SSemaphore) {
			p("| %s | %s | %s | %s | %s |%s\n", t.Name, f(r.Median(SSemaphore, t.Name, MPermitPerSec)), f(r.Median(SSemaphore, t.Name, MMutexPerSec)),
				x(r.Median(SSemaphore, t.Name, MPermitXMutex)), f(r.max(SSemaphore, t.Name, MMaxInUse)), r.errNote(SSemaphore, t.Name))
		}
		p("\n")
	}
	if r.has(SFailover) {
		c := r.Suite.Fail
		p("## (h) Election failover on etcd and ZooKeeper\n\n%s, %d failovers each. A leader campaigns and wins; a second candidate (a client of its own) campaigns for %v; then the leader's process \"dies\": on etcd its client is closed without resigning or revoking its lease; on ZooKeeper its connections are cut and new ones refused, without closing its session (which lasts the session timeout, = TTL). The figure is the time from that moment to the second candidate's Campaign returning. TTL %v for all (dlock.WithTTL, concurrency.WithTTL); nothing is partitioned (the bench has no fault injection), so this is the crash of a leader, not its isolation. go-zookeeper has no election recipe to compare with.\n\n",
			strings.ToUpper(r.runsOf(SFailover)[:1])+r.runsOf(SFailover)[1:], c.Rounds, c.Settle, c.TTL)
		if r.Single != nil && !r.Suite.SingleSlow {
			p("The single-node etcd is left out of this scenario to keep the run short (`peerbench -single-slow` adds it).\n\n")
		}
		p("| election | kind | p50 ms | p99 ms | failovers |\n|---|---|---|---|---|\n")
		for _, e := range r.Suite.Electors {
			name := ElectorName(e)
			if !r.measured(SFailover, name) {
				continue
			}
			p("| %s | %s | %s | %s | %s |%s\n", name, e.Kind, f(r.Median(SFailover, name, MP50)), f(r.Median(SFailover, name, MP99)), f(r.sum(SFailover, name, MDone)), r.errNote(SFailover, name))
		}
		p("\n")
	}
	if r.has(SScale) {
		c := r.Suite.Scale
		p("## (i) Scale: %d locks held by one client\n\n", c.N)
		p("%s. One dlock client per engine (WithTTL(%v), WithRenewInterval(%v)); %d goroutines take N distinct names with Lock (`grants/s`), against the engine's raw floor with the same %d goroutines (`floor`: below). Then, with every lock held: goroutines and heap per lock (runtime.NumGoroutine and, after a GC, HeapAlloc, against the same figures before the first lock, over N); the requests the engine's servers handled over %v (%.0f renewal intervals) while the client only held, by the servers' own counters, minus what they handled over the same time before the locks were taken (other users of the shared servers, our idle client) — per renewal interval (`sent by us`: the same window counted in this process, by the go-redis hook, the gRPC interceptors and the ZooKeeper connection's writes: no Lua internals, but no other users either; Redis is judged by this count, since its server counts each command a script runs as one it handled, and a batch of N renewals is one script); locks lost by the last grant (taking can last longer than the TTL, so early locks renew meanwhile) and by the end of the window; then the time to release all N, each Unlock in a goroutine of its own, all at once.\n\n",
			strings.ToUpper(r.runsOf(SScale)[:1])+r.runsOf(SScale)[1:], c.TTL, c.Renew, c.G, c.G, c.Window, c.Window.Seconds()/c.Renew.Seconds())
		if r.Single != nil && !r.Suite.SingleSlow {
			p("The single-node servers are left out of this scenario to keep the run short (`make bench-scale` and `peerbench -single-slow` add them).\n\n")
		}
		p("| client | N | grants/s | floor grants/s | × floor | goroutines/lock | heap B/lock | server req/s before | req/s holding | req/renewal interval | sent by us/interval | lost by the last grant | lost by the end | release all ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, t := range r.measuredTargets(SScale) {
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s\n", t.Name, f(r.Median(SScale, t.Name, MScaleN)),
				f(r.Median(SScale, t.Name, MGrantsPerSec)), f(r.Median(SScale, t.Name, MFloorGrants)), x(r.Median(SScale, t.Name, MGrantsXFloor)),
				f(r.Median(SScale, t.Name, MGoroutines)), f(r.Median(SScale, t.Name, MHeapPerLock)), f(r.Median(SScale, t.Name, MIdleReqPerSec)),
				f(r.Median(SScale, t.Name, MReqPerSec)), f(r.Median(SScale, t.Name, MReqPerRenew)), f(r.Median(SScale, t.Name, MSentPerRenew)), f(r.Median(SScale, t.Name, MLostTaking)), f(r.Median(SScale, t.Name, MLostHolding)),
				f(r.Median(SScale, t.Name, MReleaseMs)), r.errNote(SScale, t.Name))
		}
		p("\nFloors and counters:\n\n")
		for _, t := range r.measuredTargets(SScale) {
			var parts []string
			if t.Floor != nil {
				parts = append(parts, "floor: "+t.Floor.Note)
			}
			if t.Count != nil {
				parts = append(parts, "counted: "+t.Count.What)
			}
			switch {
			case t.ScaleN == 0 || t.ScaleN >= c.N:
			case t.Family == "file":
				parts = append(parts, fmt.Sprintf("N = %d only: the file descriptor limit (RLIMIT_NOFILE) allows no more at two descriptors per held lock", t.ScaleN))
			default:
				parts = append(parts, fmt.Sprintf("N = %d only (PGScaleN: one session takes and renews every lock one statement at a time)", t.ScaleN))
			}
			if len(parts) == 0 {
				parts = append(parts, "no floor, no server to count (the engine is the process)")
			}
			p("- %s: %s\n", t.Name, strings.Join(parts, "; "))
		}
		p("\n")
	}
}

// measured tells whether name has a sample (figures or an error) of sc.
func (r *Report) measured(sc, name string) bool {
	for _, s := range r.Samples {
		if s.Scenario == sc && s.Contender == name {
			return true
		}
	}
	return false
}

func (r *Report) measuredTargets(sc string) []Target {
	var ts []Target
	for _, t := range r.Suite.Targets {
		if r.measured(sc, t.Name) {
			ts = append(ts, t)
		}
	}
	return ts
}
