package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/scenario"
)

type demoOpts struct {
	backend    string
	workers    int
	increments int
	ttl        time.Duration
}

func newDemoCmd() *cobra.Command {
	var o demoOpts
	cmd := &cobra.Command{
		Use:   "demo [flags]",
		Short: "Run the shared-counter demo: W workers, K increments each, under one lock",
		Long: `Demo runs the classic shared-counter scenario, done right. W workers, each
with its own connection to the engine, each add 1 to a counter K times. The
counter is kept in the engine itself (an etcd key, a Redis key, a ZooKeeper
node, a file next to the lock files) and every increment is a separate read
and write, made safe only by the lock. Without the lock the final count
comes out short; with it, it is exactly W*K.

With no --backend (and no ` + envBackend + `) the demo starts an embedded
single-node engine in a temporary directory and removes it afterwards; no
installation is needed.

It reports the final counter against W*K, lock grants per second, how long
workers waited for the lock and how long a handoff from one holder to the
next took (median and 99th percentile), the range of fencing tokens, and
whether the tokens increase in the order the counter did.

Exit status: 0 if the counter is exact, 1 if not, 64 bad usage, 69 engine
unreachable or misconfigured.`,
		Example: `  dlock demo
  dlock demo --workers 50 --increments 20
  dlock demo --backend redis://127.0.0.1:6379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.workers < 1 || o.increments < 1 {
				return usagef(cmd, "--workers %d --increments %d: want both >= 1", o.workers, o.increments)
			}
			if o.ttl <= 0 {
				return usagef(cmd, "--ttl %v: want a duration > 0", o.ttl)
			}
			return demo(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.backend, "backend", "", "engine URL (default $"+envBackend+", else an embedded engine)")
	f.IntVar(&o.workers, "workers", 10, "number of workers, each with its own connection")
	f.IntVar(&o.increments, "increments", 100, "increments per worker")
	f.DurationVar(&o.ttl, "ttl", dlock.DefaultTTL, "lock TTL")
	return cmd
}

func demo(ctx context.Context, o demoOpts, out io.Writer) error {
	backend, label := o.backend, ""
	if backend == "" {
		backend = os.Getenv(envBackend)
	}
	if backend == "" {
		b, stop, err := startEmbedded(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx, "while starting the embedded engine")
			}
			return exitf(exitUnavailable, "starting the embedded engine: %v", err)
		}
		defer stop()
		backend, label = b.url, b.label
	}
	if label == "" {
		label = redactURL(backend)
	}
	fmt.Fprintf(out, "dlock demo: %d workers x %d increments of a counter kept in %s, each under the lock\n",
		o.workers, o.increments, label)

	var done atomic.Int64
	stopProgress := showProgress(out, &done, int64(o.workers*o.increments))
	res, err := runCounter(ctx, backend, o.workers, o.increments, o.ttl, &done)
	stopProgress()
	if err != nil {
		return scenarioExit(ctx, backend, err)
	}
	printSummary(out, res)
	if res.Final != res.Want {
		return exitf(exitFailure, "counter is %d, want %d: increments were lost, so the lock did not exclude", res.Final, res.Want)
	}
	if err := res.OrderErr(); err != nil {
		return exitf(exitFailure, "fencing tokens out of step with the counter: %v", err)
	}
	return nil
}

// scenarioExit maps a failed scenario to its exit code.
func scenarioExit(ctx context.Context, backend string, err error) error {
	var ee *engineError
	switch {
	case ctx.Err() != nil:
		return interrupted(ctx, "")
	case errors.Is(err, dlock.ErrInvalidArgument):
		return exitf(exitUnavailable, "backend %s: %v\nfix the URL given by --backend or %s", redactURL(backend), err, envBackend)
	case errors.As(err, &ee):
		return exitf(exitUnavailable, "backend %s: %v\ncheck that the engine is running and reachable", redactURL(backend), err)
	}
	return exitf(exitFailure, "on %s: %v", redactURL(backend), err)
}

func printSummary(out io.Writer, res *scenario.CounterRun) {
	verdict := "exact"
	if res.Final != res.Want {
		verdict = fmt.Sprintf("WRONG: %d increments lost", res.Want-res.Final)
	}
	fmt.Fprintf(out, "counter        %d (want %d): %s\n", res.Final, res.Want, verdict)
	fmt.Fprintf(out, "grants/s       %.0f (%d grants in %v)\n", res.PerSec(), len(res.Grants), res.Elapsed.Round(time.Millisecond))
	wait, handoff := res.Waits(), res.Handoffs()
	fmt.Fprintf(out, "wait           p50 %s  p99 %s\n", fmtDur(scenario.Percentile(wait, .5)), fmtDur(scenario.Percentile(wait, .99)))
	fmt.Fprintf(out, "handoff        p50 %s  p99 %s  (%d handoffs to a waiting worker)\n",
		fmtDur(scenario.Percentile(handoff, .5)), fmtDur(scenario.Percentile(handoff, .99)), len(handoff))
	if n := len(res.Grants); n > 0 {
		order := "strictly increasing in the order the counter grew"
		if err := res.OrderErr(); err != nil {
			order = "OUT OF ORDER: " + err.Error()
		}
		fmt.Fprintf(out, "tokens         %d..%d, %s\n", res.Grants[0].Token, res.Grants[n-1].Token, order)
		if n > 1 {
			fmt.Fprintf(out, "owner changes  %.0f%% of grants went to another worker\n", 100*float64(res.OwnerChanges())/float64(n-1))
		}
	}
}

// fmtDur prints latencies with three significant digits.
var fmtDur = scenario.FormatDuration

// showProgress reports done/total until the returned stop is called: a bar
// redrawn in place on a terminal, a line a second otherwise.
func showProgress(out io.Writer, done interface{ Load() int64 }, total int64) (stop func()) {
	term := isTerminal(out)
	every := time.Second
	if term {
		every = 100 * time.Millisecond
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				if term {
					fmt.Fprintf(out, "\r%s\r", strings.Repeat(" ", 60))
				}
				return
			case <-t.C:
			}
			n := done.Load()
			rate := float64(n) / time.Since(start).Seconds()
			if term {
				const width = 30
				fill := int(int64(width) * n / total)
				fmt.Fprintf(out, "\r[%s%s] %d/%d  %.0f/s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), n, total, rate)
			} else {
				fmt.Fprintf(out, "progress: %d/%d increments (%.0f%%), %.0f grants/s\n", n, total, 100*float64(n)/float64(total), rate)
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
