package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
)

type runOpts struct {
	backend string
	ttl     time.Duration
	wait    time.Duration
	noWait  bool
	grace   time.Duration
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [flags] NAME -- CMD [ARGS...]",
		Short: "Run a command while holding a lock",
		Long: `Run takes the lock NAME, runs CMD with it held, releases it when CMD exits and
exits with CMD's status.

CMD gets DLOCK_TOKEN (the fencing token, a decimal number that strictly
increases for NAME in the order the lock is granted) and DLOCK_NAME in its
environment. Pass the token to whatever CMD writes to, and have it refuse
tokens older than the last it saw.

CMD runs in its own process group. SIGINT, SIGTERM and SIGHUP received by
dlock are forwarded to that group. The lock is renewed while CMD runs; if it
is lost (the engine dropped it, or renewals failed until shortly before the
engine would), the group gets SIGTERM at once and SIGKILL after --grace.

Exit status:
  0-125  CMD's own exit status
  64     bad usage (flags, arguments)
  69     the engine is unreachable or misconfigured (--backend, DLOCK_BACKEND)
  75     lock not acquired: held elsewhere with --no-wait, or --wait elapsed
  76     the lock was lost while CMD ran; CMD was terminated
  126    CMD could not be executed
  127    CMD was not found
  128+N  CMD died of signal N, or dlock was interrupted by signal N while
         waiting for the lock (130 for SIGINT); nothing is left queued`,
		Example: `  dlock run nightly-report -- ./report.sh
  dlock run --no-wait --ttl 30s deploy -- make deploy
  DLOCK_BACKEND=etcd://10.0.0.1:2379 dlock run --wait 1m db-migrate -- ./migrate --fence "$DLOCK_TOKEN"`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv, err := splitRunArgs(cmd, args)
			if err != nil {
				return err
			}
			if o.ttl <= 0 {
				return usagef(cmd, "--ttl %v: want a duration > 0, such as 15s", o.ttl)
			}
			if o.grace < 0 {
				return usagef(cmd, "--grace %v: want a duration >= 0", o.grace)
			}
			if o.wait < 0 {
				return usagef(cmd, "--wait %v: want a duration > 0 (omit it to wait forever)", o.wait)
			}
			if o.noWait && cmd.Flags().Changed("wait") {
				return usagef(cmd, "--wait and --no-wait contradict each other: give one")
			}
			return runLocked(cmd.Context(), o, name, argv, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.backend, "backend", "", "engine URL (default $"+envBackend+", else "+defaultBackend+")")
	f.DurationVar(&o.ttl, "ttl", dlock.DefaultTTL, "how long the engine keeps the lock if dlock stops renewing it (a crashed dlock's lock frees after this)")
	f.DurationVar(&o.wait, "wait", 0, "give up (exit 75) if the lock is not granted within this long (default: wait forever)")
	f.BoolVar(&o.noWait, "no-wait", false, "exit 75 at once if the lock is held elsewhere")
	f.DurationVar(&o.grace, "grace", 5*time.Second, "after a lost lock, time between SIGTERM and SIGKILL to CMD")
	return cmd
}

// splitRunArgs separates NAME from CMD. "--" is required when CMD has
// options of its own (otherwise dlock would take them); cobra removes it and
// tells where it was.
func splitRunArgs(cmd *cobra.Command, args []string) (string, []string, error) {
	dash := cmd.ArgsLenAtDash()
	switch {
	case len(args) == 0:
		return "", nil, usagef(cmd, "missing lock NAME and command: dlock run NAME -- CMD [ARGS...]")
	case dash == 0:
		return "", nil, usagef(cmd, "missing lock NAME before --: dlock run NAME -- CMD [ARGS...]")
	case dash > 1:
		return "", nil, usagef(cmd, "want exactly one lock NAME before --, got %d: %q", dash, args[:dash])
	case len(args) == 1:
		return "", nil, usagef(cmd, "missing command to run after the lock name %q: dlock run NAME -- CMD [ARGS...]", args[0])
	case args[0] == "":
		return "", nil, usagef(cmd, "empty lock NAME")
	}
	return args[0], args[1:], nil
}

// runLocked acquires name, runs argv under it and maps every outcome to an
// exit code.
func runLocked(ctx context.Context, o runOpts, name string, argv []string, stdout, stderr io.Writer) error {
	url := backendURL(o.backend)
	c, err := openBackend(ctx, url, dlock.WithTTL(o.ttl))
	if err != nil {
		return err
	}
	defer c.Close()

	lease, err := acquire(ctx, c, o, name)
	if err != nil {
		return err
	}
	code, childErr := supervise(ctx, lease, o.grace, argv, stdout, stderr)

	// Release even if dlock was interrupted: the lock is ours to give back.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ttl)
	defer cancel()
	uerr := lease.Unlock(uctx)
	switch {
	case errors.Is(lease.Err(), dlock.ErrLockLost) || errors.Is(uerr, dlock.ErrLockLost):
		// Either we saw the loss and stopped the command, or the engine had
		// already dropped the lock when the command finished: in both cases
		// the command may have run without the lock.
		why := lease.Err()
		if !errors.Is(why, dlock.ErrLockLost) {
			why = uerr
		}
		return exitf(exitLost, "lock %q (token %d) lost while the command ran (its own status was %d): %v",
			name, lease.Token(), code, why)
	case uerr != nil:
		fmt.Fprintf(stderr, "dlock: warning: releasing %q: %v (the engine frees it when its TTL of %v runs out)\n", name, uerr, o.ttl)
	}
	if childErr != nil {
		return childErr
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

func acquire(ctx context.Context, c *dlock.Client, o runOpts, name string) (*dlock.Lease, error) {
	m := c.Mutex(name)
	var (
		lease *dlock.Lease
		err   error
	)
	switch {
	case o.noWait:
		lease, err = m.TryLock(ctx)
	case o.wait > 0:
		wctx, cancel := context.WithTimeout(ctx, o.wait)
		lease, err = m.Lock(wctx)
		cancel()
	default:
		lease, err = m.Lock(ctx)
	}
	switch {
	case err == nil:
		return lease, nil
	case ctx.Err() != nil:
		return nil, interrupted(ctx, fmt.Sprintf("while waiting for lock %q (nothing left queued)", name))
	case errors.Is(err, dlock.ErrNotAcquired):
		return nil, exitf(exitNotAcquired, "lock %q is held elsewhere (--no-wait)", name)
	case errors.Is(err, context.DeadlineExceeded) && o.wait > 0:
		return nil, exitf(exitNotAcquired, "lock %q not acquired within --wait %v", name, o.wait)
	case errors.Is(err, dlock.ErrInvalidArgument):
		return nil, exitf(exitUsage, "%v", err)
	}
	return nil, exitf(exitUnavailable, "acquiring %q on %s: %v\ncheck that the engine is running and reachable", name, redactURL(backendURL(o.backend)), err)
}

// supervise runs argv while lease is held: it forwards signals, and stops
// the command when the lease is lost. It returns the command's exit code, or
// an error for a command that could not start.
func supervise(ctx context.Context, lease *dlock.Lease, grace time.Duration, argv []string, stdout, stderr io.Writer) (int, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		code := exitNotFound
		if errors.Is(err, os.ErrPermission) {
			code = exitCannotExec
		}
		return 0, exitf(code, "cannot run %q: %v", argv[0], err)
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = append(withoutDlockVars(os.Environ()),
		"DLOCK_TOKEN="+strconv.FormatUint(lease.Token(), 10),
		"DLOCK_NAME="+lease.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	// A group of its own lets a loss stop the whole tree (sh -c 'a | b'),
	// not just its first process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Output copying must not hang on a grandchild that escaped the group.
	cmd.WaitDelay = grace + time.Second
	if err := cmd.Start(); err != nil {
		return 0, exitf(exitCannotExec, "cannot run %q: %v", argv[0], err)
	}
	pgid := cmd.Process.Pid

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	sigs := signalsFrom(ctx)
	var ctxDone <-chan struct{}
	if sigs == nil {
		ctxDone = ctx.Done() // no relay (tests): forward the one cancellation
	}
	lost := lease.Done()
	var kill <-chan time.Time
	for {
		select {
		case err := <-exited:
			return childCode(cmd, err)
		case s := <-sigs:
			if sig, ok := s.(syscall.Signal); ok {
				_ = syscall.Kill(-pgid, sig)
			}
		case <-ctxDone:
			ctxDone = nil
			sig := syscall.SIGINT
			var sc signalCause
			if errors.As(context.Cause(ctx), &sc) {
				sig, _ = sc.sig.(syscall.Signal)
			}
			_ = syscall.Kill(-pgid, sig)
		case <-lost:
			lost = nil
			fmt.Fprintf(stderr, "dlock: lock %q lost (%v): sending SIGTERM to the command, SIGKILL in %v\n",
				lease.Name(), lease.Err(), grace)
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			t := time.NewTimer(grace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
}

// childCode returns the shell-style status of a finished command.
func childCode(cmd *exec.Cmd, err error) (int, error) {
	ps := cmd.ProcessState
	if ps == nil { // Wait failed before the process was reaped
		return exitFailure, exitf(exitFailure, "waiting for %q: %v", cmd.Args[0], err)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

func withoutDlockVars(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "DLOCK_TOKEN=") || strings.HasPrefix(kv, "DLOCK_NAME=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
