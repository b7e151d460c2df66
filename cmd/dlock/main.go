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
	// signal to forward it to its command.
	sigs := make(chan os.Signal, 32)
	notifySignals(sigs)
	ctx, cancel := context.WithCancelCause(context.Background())
	relay := make(chan os.Signal, 32)
	go func() {
		for s := range sigs {
			switch {
			case s == syscall.SIGTSTP && !commandRunning.Load():
				// Ctrl-Z while waiting for the lock (or any time no command
				// runs): stop, as any program would.
				stopSelf()
				continue
			case s == syscall.SIGPIPE:
				// dlock's own write to a closed pipe (the write fails with
				// EPIPE). The supervisor of a command must not die of it;
				// otherwise stop, as by default (`dlock demo | head`).
				if !commandRunning.Load() {
					cancel(signalCause{s})
				}
				continue
			}
			if endsProcess(s) {
				cancel(signalCause{s})
			}
			select {
			case relay <- s:
			default: // the child is being flooded; dropping one copy is harmless
			}
		}
	}()
	ctx = withSignals(ctx, relay)

	os.Exit(exitCode(Run(ctx, os.Args[1:], os.Stdout, os.Stderr)))
}

// caught are the signals dlock takes over: every signal a user can send and
// a program can catch, except
//   - SIGCHLD (dlock's own business) and SIGURG (the Go runtime preempts
//     goroutines with it);
//   - SIGTTIN and SIGTTOU, left to stop dlock: caught, a background write to
//     a terminal with `stty tostop` would retry forever;
//   - signals 32 and 33, which the C library keeps for itself.
//
// SIGPIPE is caught so that a write to a closed stderr fails with EPIPE
// instead of killing dlock while it supervises a command.
var caught = func() []os.Signal {
	s := []os.Signal{
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGILL, syscall.SIGTRAP,
		syscall.SIGABRT, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGUSR1, syscall.SIGSEGV,
		syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGSTKFLT,
		syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGVTALRM,
		syscall.SIGPROF, syscall.SIGWINCH, syscall.SIGIO, syscall.SIGPWR, syscall.SIGSYS,
	}
	for n := 34; n <= 64; n++ { // SIGRTMIN..SIGRTMAX
		s = append(s, syscall.Signal(n))
	}
	return s
}()

// notifySignals relays the caught signals to ch, except those ignored when
// dlock started (nohup): they stay ignored, for dlock and its command.
func notifySignals(ch chan<- os.Signal) {
	for _, s := range caught {
		if !signal.Ignored(s) {
			signal.Notify(ch, s)
		}
	}
}

// endsProcess reports whether sig's default action ends a process: such a
// signal interrupts dlock while it waits for a lock (exit 128+N).
func endsProcess(sig os.Signal) bool {
	switch sig {
	case syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGWINCH, syscall.SIGPIPE:
		return false // SIGPIPE is main's business
	}
	return true
}
