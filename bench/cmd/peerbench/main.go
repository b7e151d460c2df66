// Command peerbench measures dlock's drivers against the peer lock libraries
// and the raw engine round trips on the shared test servers
// (scripts/services.sh up), and writes docs/BENCHMARKS.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dlockio/dlock/bench"
	"github.com/dlockio/dlock/internal/scenario"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "peerbench:", err)
		os.Exit(1)
	}
}

// Run parses args, runs the suite and writes the report.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("peerbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", strings.Join(bench.AllScenarios, ","), "comma-separated scenarios")
	runs := fs.Int("runs", 5, "runs of every scenario; figures are medians over runs")
	only := fs.String("contenders", ".", "regexp: contenders to run")
	out := fs.String("out", "", "markdown report to write (docs/BENCHMARKS.md)")
	jsonOut := fs.String("json", "", "raw samples to write as JSON")
	command := fs.String("command", "", "the command line to print in the report")
	took := fs.Duration("took", 0, "with -replay: how long the measured run took, for the report")
	replay := fs.String("replay", "", "re-render the report from a -json file instead of measuring")
	quick := fs.Bool("quick", false, "short budgets, for development")
	single := fs.Bool("single", true, "also start a single-node Redis, etcd and ZooKeeper at their defaults and measure them")
	scaleRuns := fs.Int("scale-runs", 1, "runs (of -runs) that measure the scale scenario")
	failRuns := fs.Int("failover-runs", 1, "runs (of -runs) that measure election failover")
	primRuns := fs.Int("prim-runs", 3, "runs (of -runs) that measure the rw and semaphore scenarios")
	singleSlow := fs.Bool("single-slow", false, "also run scale and failover on the single-node setup")
	singleRuns := fs.Int("single-runs", 3, "runs (of -runs) that measure the single-node setup's contenders")
	scaleN := fs.Int("scale-n", bench.DefaultScale.N, "locks held at once in the scale scenario")
	if err := fs.Parse(args); err != nil {
		return err
	}
	eng, err := bench.Connect(ctx)
	if err != nil {
		return err
	}
	defer eng.Close()
	var sn *bench.SingleNode
	var one *bench.Engines
	if *single {
		if sn, err = bench.StartSingleNode(ctx); err != nil {
			return err
		}
		defer sn.Stop()
		if one, err = bench.ConnectSingle(ctx, sn); err != nil {
			return err
		}
		defer one.Close()
	}
	s := eng.Suite(one)
	s.Config = bench.DefaultConfig
	s.Scale, s.Prim, s.Fail = bench.DefaultScale, bench.DefaultPrim, bench.DefaultFailover
	s.Scale.N = *scaleN
	s.SingleSlow = *singleSlow
	s.ScaleRuns, s.FailoverRuns, s.PrimRuns, s.SingleRuns = *scaleRuns, *failRuns, *primRuns, *singleRuns
	if *quick {
		s.Config.Uncontended.Max = 100 * time.Millisecond
		s.Config.CounterMax = 500 * time.Millisecond
		s.Config.Handoff = scenario.Budget{N: 5, Max: 500 * time.Millisecond}
		s.Config.NamesBudget.Max = 200 * time.Millisecond
		s.Prim.Budget.Max = 200 * time.Millisecond
		s.Fail.Rounds = 3
	}
	s.Scenarios = strings.Split(*scen, ",")
	s.Runs = *runs
	s.Log = stderr
	if err := s.Filter(*only); err != nil {
		return err
	}
	start := time.Now()
	var samples []bench.Sample
	if *replay != "" {
		b, err := os.ReadFile(*replay)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &samples); err != nil {
			return fmt.Errorf("%s: %w", *replay, err)
		}
	} else {
		samples = s.Run(ctx)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(samples, "", " ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	rep := bench.Report{Suite: s, Samples: samples, Command: *command, Took: time.Since(start), Engines: eng, Single: one}
	if *replay != "" {
		rep.Took = *took
	}
	md := rep.Markdown(ctx)
	if *out == "" {
		_, err = io.WriteString(stdout, md)
		return err
	}
	if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "peerbench: wrote %s\n", *out)
	return nil
}
