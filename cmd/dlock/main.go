// Command dlock runs commands under a distributed lock, demonstrates and
// benchmarks the lock engines, and inspects locks. See README.md, or run
// `dlock --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Signals become a context cancelled with the signal as its cause, so
	// that every subcommand stops promptly; `dlock run` also receives each
	// signal to forward it to its child.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	ctx, cancel := context.WithCancelCause(context.Background())
	relay := make(chan os.Signal, 8)
	go func() {
		for s := range sigs {
			cancel(signalCause{s})
			select {
			case relay <- s:
			default: // the child is being flooded; dropping one copy is harmless
			}
		}
	}()
	ctx = withSignals(ctx, relay)

	os.Exit(exitCode(Run(ctx, os.Args[1:], os.Stdout, os.Stderr)))
}
