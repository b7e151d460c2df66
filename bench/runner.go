package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dlockio/dlock/internal/scenario"
)

// Scenario names, as given to -scenarios.
const (
	SUncontended = "uncontended"
	SCounter10   = "counter-w10"
	SCounter50   = "counter-w50"
	SHandoff     = "handoff"
	SManyNames   = "many-names"
	SGoroutines  = "goroutines"
	// Scenarios of one dlock client per engine (Suite.Targets).
	SScale     = "scale"
	SRW        = "rw"
	SSemaphore = "semaphore"
	// Election failover on etcd (Suite.Electors).
	SFailover = "failover"
)

// AllScenarios in the order they run within one round.
var AllScenarios = []string{SUncontended, SCounter10, SCounter50, SHandoff, SManyNames, SGoroutines, SRW, SSemaphore, SFailover, SScale}

// targetScenario tells the scenarios run on Suite.Targets.
func targetScenario(sc string) bool { return sc == SScale || sc == SRW || sc == SSemaphore }

// Sample is one measurement of one contender in one run.
type Sample struct {
	Run       int
	Scenario  string
	Contender string
	Metrics   Metrics
	Err       string `json:",omitempty"` // the scenario failed; no figures
	Note      string `json:",omitempty"` // figures stand, but something failed
}

// Suite is everything one benchmark run needs.
type Suite struct {
	Contenders []Contender
	Families   map[string]Family
	Config     Config
	Scenarios  []string
	Runs       int
	Log        io.Writer

	Targets  []Target  // one dlock client per engine: scale, rw, semaphore
	Electors []Elector // failover
	Scale    ScaleConfig
	Prim     PrimConfig
	Fail     FailoverConfig
	// ScaleRuns and FailoverRuns bound the runs that measure scale and
	// failover (the slow scenarios; their figures are medians of fewer
	// runs), PrimRuns those of rw and semaphore.
	ScaleRuns, FailoverRuns, PrimRuns int
	// SingleRuns bounds the runs that measure the single-node setup's
	// contenders.
	SingleRuns int
	// SingleSlow also runs scale and failover on the single-node setup
	// (they take minutes there too).
	SingleSlow bool
}

// Filter keeps the contenders whose name matches re.
func (s *Suite) Filter(re string) error {
	r, err := regexp.Compile(re)
	if err != nil {
		return err
	}
	s.Contenders = slices.DeleteFunc(s.Contenders, func(c Contender) bool { return !r.MatchString(c.Name) })
	s.Targets = slices.DeleteFunc(s.Targets, func(t Target) bool { return !r.MatchString(t.Name) })
	s.Electors = slices.DeleteFunc(s.Electors, func(e Elector) bool { return !r.MatchString(ElectorName(e)) })
	return nil
}

// Run measures every scenario for every contender, Runs times. Within a run
// the contenders follow each other scenario by scenario (A B C, A B C, …),
// starting one further each run, so slow drift of the shared machine lands on
// all of them alike.
func (s *Suite) Run(ctx context.Context) []Sample {
	runID := time.Now().Format("150405")
	var out []Sample
	for run := 1; run <= s.Runs; run++ {
		for _, sc := range s.Scenarios {
			if targetScenario(sc) || sc == SFailover {
				out = append(out, s.runOnce(ctx, run, sc, runID)...)
				continue
			}
			for i := range s.Contenders {
				c := s.Contenders[(i+run-1)%len(s.Contenders)]
				if ctx.Err() != nil {
					return out
				}
				if c.NoWait && (sc == SCounter10 || sc == SCounter50) {
					continue
				}
				if strings.HasSuffix(c.Family, SingleSuffix) && run > s.SingleRuns {
					continue
				}
				name := fmt.Sprintf("pb%s-r%d-%s-%s", runID, run, c.Name, sc)
				t := time.Now()
				m, err := s.one(ctx, c, sc, name)
				smp := Sample{Run: run, Scenario: sc, Contender: c.Name, Metrics: m}
				var part scenario.Partial
				if errors.As(err, &part) {
					smp.Note = err.Error()
				} else if err != nil {
					smp.Err = err.Error()
				}
				out = append(out, smp)
				if s.Log != nil {
					fmt.Fprintf(s.Log, "run %d %-12s %-16s %6.2fs %s %s\n", run, sc, c.Name, time.Since(t).Seconds(), fmtMetrics(m), smp.Err+smp.Note)
				}
			}
		}
	}
	return out
}

// runOnce runs one of the scenarios that measure Targets or Electors
// rather than Contenders, in the runs its setting allows.
func (s *Suite) runOnce(ctx context.Context, run int, sc, runID string) []Sample {
	type item struct {
		name string
		fn   func(ctx context.Context, name string) (Metrics, error)
	}
	var items []item
	switch {
	case sc == SFailover && run <= s.FailoverRuns:
		for _, e := range s.Electors {
			if strings.HasSuffix(e.Family, SingleSuffix) && !s.SingleSlow {
				continue
			}
			items = append(items, item{ElectorName(e), func(ctx context.Context, name string) (Metrics, error) {
				return Failover(ctx, e, name, s.Fail)
			}})
		}
	case sc == SScale && run <= s.ScaleRuns:
		for _, t := range s.Targets {
			if strings.HasSuffix(t.Family, SingleSuffix) && !s.SingleSlow {
				continue
			}
			items = append(items, item{t.Name, func(ctx context.Context, name string) (Metrics, error) { return Scale(ctx, t, name, s.Scale) }})
		}
	case (sc == SRW || sc == SSemaphore) && run <= s.PrimRuns:
		for _, t := range s.Targets {
			items = append(items, item{t.Name, func(ctx context.Context, name string) (Metrics, error) {
				if sc == SRW {
					return RW(ctx, t, name, s.Prim)
				}
				return Semaphore(ctx, t, name, s.Prim)
			}})
		}
	}
	var out []Sample
	for i := range items {
		it := items[(i+run-1)%len(items)]
		if ctx.Err() != nil {
			return out
		}
		t := time.Now()
		// No scenario may hang the suite, whatever a driver does.
		ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		m, err := it.fn(ictx, fmt.Sprintf("pb%s-r%d-%s-%s", runID, run, it.name, sc))
		cancel()
		smp := Sample{Run: run, Scenario: sc, Contender: it.name, Metrics: m}
		var part scenario.Partial
		if errors.As(err, &part) {
			smp.Note = err.Error()
		} else if err != nil {
			smp.Err = err.Error()
		}
		out = append(out, smp)
		if s.Log != nil {
			fmt.Fprintf(s.Log, "run %d %-12s %-16s %6.2fs %s %s\n", run, sc, it.name, time.Since(t).Seconds(), fmtMetrics(m), smp.Err+smp.Note)
		}
	}
	return out
}

// ElectorName is an elector's column: its name, with the family's suffix
// for the single-node setup.
func ElectorName(e Elector) string {
	for _, base := range []string{"etcd", "zookeeper"} {
		if suffix, ok := strings.CutPrefix(e.Family, base); ok {
			return e.Name + suffix
		}
	}
	return e.Name
}

func (s *Suite) one(ctx context.Context, c Contender, sc, name string) (Metrics, error) {
	cfg := s.Config
	// No scenario may hang the suite, whatever a contender does.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch sc {
	case SUncontended:
		return Uncontended(ctx, c, name, cfg.Uncontended)
	case SCounter10:
		return SharedCounter(ctx, c, s.Families[c.Family], name, 10, cfg.CounterK, cfg.CounterMax)
	case SCounter50:
		return SharedCounter(ctx, c, s.Families[c.Family], name, 50, cfg.CounterK, cfg.CounterMax)
	case SHandoff:
		return Handoff(ctx, c, name, cfg.Handoff, cfg.HoldMin, cfg.HoldMax)
	case SManyNames:
		return ManyNames(ctx, c, name, cfg.Names, cfg.NamesG, cfg.NamesBudget)
	case SGoroutines:
		return Goroutines(ctx, c, name, cfg.Held)
	}
	return nil, fmt.Errorf("unknown scenario %q", sc)
}

func fmtMetrics(m Metrics) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.4g ", k, m[k])
	}
	return b.String()
}
