package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
)

type benchOpts struct {
	backends   []string
	workers    int
	increments int
	cycles     int
}

func newBenchCmd() *cobra.Command {
	var o benchOpts
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Compare engines on the same scenarios, side by side",
		Long: `Bench runs two scenarios on each engine given by --backend (repeat the flag)
and prints the results as one table, an engine per column:

  uncontended   one client locks and unlocks a lock nobody else wants
                --cycles times: cycles per second, cycle latency p50/p99;
  counter       the shared-counter demo (--workers x --increments): lock
                grants per second, wait and handoff latency p50/p99, and
                whether the counter came out exact.

Without --backend it compares mem:// and file://, plus $` + envBackend + ` if set.
Numbers from a busy machine vary: run it more than once.

Exit status: 0, 1 if any counter came out wrong, 64 bad usage, 69 an
engine unreachable or misconfigured.`,
		Example: `  dlock bench
  dlock bench --backend file:// --backend etcd://127.0.0.1:2379 --backend redis://127.0.0.1:6379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.workers < 1 || o.increments < 1 || o.cycles < 1 {
				return usagef(cmd, "--workers, --increments and --cycles must be >= 1")
			}
			if len(o.backends) == 0 {
				o.backends = []string{"mem://", "file://"}
				if b := os.Getenv(envBackend); b != "" && !slices.Contains(o.backends, b) {
					o.backends = append(o.backends, b)
				}
			}
			return bench(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.backends, "backend", nil, "engine URL to measure; repeat for several")
	f.IntVar(&o.workers, "workers", 10, "workers in the counter scenario")
	f.IntVar(&o.increments, "increments", 50, "increments per worker in the counter scenario")
	f.IntVar(&o.cycles, "cycles", 200, "lock/unlock cycles in the uncontended scenario")
	return cmd
}

type benchResult struct {
	cycles  scenario.Cycles
	counter *scenario.CounterRun
}

func (r benchResult) exact() bool {
	return r.counter.Final == r.counter.Want && r.counter.OrderErr() == nil
}

func bench(ctx context.Context, o benchOpts, stdout, stderr io.Writer) error {
	results := make([]benchResult, len(o.backends))
	for i, b := range o.backends {
		fmt.Fprintf(stderr, "bench: %s ...\n", redactURL(b))
		cyc, err := uncontended(ctx, b, o.cycles)
		if err != nil {
			return scenarioExit(ctx, b, err)
		}
		results[i].cycles = cyc
		res, err := runCounter(ctx, b, o.workers, o.increments, dlock.DefaultTTL, nil)
		if err != nil {
			return scenarioExit(ctx, b, err)
		}
		results[i].counter = res
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(label string, cell func(benchResult) string) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, r := range results {
			fmt.Fprintf(tw, "%s\t", cell(r))
		}
		fmt.Fprintln(tw)
	}
	pct := func(ds func(benchResult) []time.Duration, q float64) func(benchResult) string {
		return func(r benchResult) string { return fmtDur(scenario.Percentile(ds(r), q)) }
	}
	cycles := func(r benchResult) []time.Duration { return r.cycles.Latencies }
	waits := func(r benchResult) []time.Duration { return r.counter.Waits() }
	handoffs := func(r benchResult) []time.Duration { return r.counter.Handoffs() }
	fmt.Fprintf(tw, "\t")
	for _, b := range o.backends {
		fmt.Fprintf(tw, "%s\t", shortLabel(b))
	}
	fmt.Fprintln(tw)
	row(fmt.Sprintf("uncontended cycles/s (%d)", o.cycles), func(r benchResult) string { return fmt.Sprintf("%.0f", r.cycles.PerSec()) })
	row("uncontended cycle p50", pct(cycles, .5))
	row("uncontended cycle p99", pct(cycles, .99))
	row(fmt.Sprintf("counter grants/s (%dx%d)", o.workers, o.increments), func(r benchResult) string { return fmt.Sprintf("%.0f", r.counter.PerSec()) })
	row("counter wait p50", pct(waits, .5))
	row("counter wait p99", pct(waits, .99))
	row("handoff p50", pct(handoffs, .5))
	row("handoff p99", pct(handoffs, .99))
	row("counter", func(r benchResult) string {
		if !r.exact() {
			return fmt.Sprintf("WRONG %d/%d", r.counter.Final, r.counter.Want)
		}
		return fmt.Sprintf("exact %d", r.counter.Final)
	})
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, r := range results {
		if !r.exact() {
			return exitf(exitFailure, "counter on %s came out %d, want %d (order: %v)", redactURL(o.backends[i]), r.counter.Final, r.counter.Want, r.counter.OrderErr())
		}
	}
	return nil
}

// uncontended times lock/unlock cycles of one client on a lock nobody else
// wants: the engine's round trips plus the portable layer's overhead.
func uncontended(ctx context.Context, backend string, cycles int) (scenario.Cycles, error) {
	c, err := openWithin(ctx, backend)
	if err != nil {
		return scenario.Cycles{}, &engineError{err}
	}
	l := scenario.Client(c)
	defer l.Close()
	return scenario.Uncontended(ctx, l, "dlock-bench/"+randomID(), scenario.Budget{N: cycles})
}

// shortLabel names a backend in a table column: scheme and first host.
func shortLabel(raw string) string {
	u, err := parseURL(raw)
	if err != nil {
		return "?"
	}
	host, _, more := strings.Cut(u.Host, ",")
	if more {
		host += ",…"
	}
	if u.Scheme == "file" && u.Path != "" {
		return "file://…" + filepath.Base(u.Path)
	}
	return u.Scheme + "://" + host
}
