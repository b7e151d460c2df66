package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/dlockio/dlock"
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

	r := &counterRun{backend: backend, workers: o.workers, increments: o.increments, ttl: o.ttl}
	stopProgress := showProgress(out, &r.done, int64(o.workers*o.increments))
	res, err := r.run(ctx)
	stopProgress()
	if err != nil {
		return scenarioExit(ctx, backend, err)
	}
	printSummary(out, res)
	if res.counter != res.want {
		return exitf(exitFailure, "counter is %d, want %d: increments were lost, so the lock did not exclude", res.counter, res.want)
	}
	if res.orderErr != nil {
		return exitf(exitFailure, "fencing tokens out of step with the counter: %v", res.orderErr)
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

func printSummary(out io.Writer, res *counterResult) {
	verdict := "exact"
	if res.counter != res.want {
		verdict = fmt.Sprintf("WRONG: %d increments lost", res.want-res.counter)
	}
	fmt.Fprintf(out, "counter        %d (want %d): %s\n", res.counter, res.want, verdict)
	fmt.Fprintf(out, "grants/s       %.0f (%d grants in %v)\n", res.grantsPerSec(), len(res.grants), res.elapsed.Round(time.Millisecond))
	fmt.Fprintf(out, "wait           p50 %s  p99 %s\n", fmtDur(percentile(res.wait, 50)), fmtDur(percentile(res.wait, 99)))
	fmt.Fprintf(out, "handoff        p50 %s  p99 %s  (%d handoffs to a waiting worker)\n",
		fmtDur(percentile(res.handoff, 50)), fmtDur(percentile(res.handoff, 99)), len(res.handoff))
	if n := len(res.grants); n > 0 {
		order := "strictly increasing in the order the counter grew"
		if res.orderErr != nil {
			order = "OUT OF ORDER: " + res.orderErr.Error()
		}
		fmt.Fprintf(out, "tokens         %d..%d, %s\n", res.grants[0].token, res.grants[n-1].token, order)
		if n > 1 {
			fmt.Fprintf(out, "owner changes  %.0f%% of grants went to another worker\n", 100*float64(res.ownerChanges)/float64(n-1))
		}
	}
}

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
