package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
)

// minRunTTL is the shortest --ttl `dlock run` accepts: below it, renewals
// (every TTL/3) and the safety margin (TTL/10) shrink to the scale of a
// process start or a network round trip, and the engines' own granularity
// (etcd leases count whole seconds).
const minRunTTL = time.Second

type runOpts struct {
	backend string
	ttl     time.Duration
	wait    time.Duration
	noWait  bool
	once    string // the flag that asked for a single try: --no-wait or --wait 0s; "" to wait
	shared  bool   // a reader's lock of the read-write lock NAME
	limit   int    // > 0: one of limit permits of the semaphore NAME
	elect   bool   // campaign in the election NAME (dlock elect)
	value   string // the leader's value (dlock elect --value)

	lockFile *os.File // file://: the held lock file, for the guard to keep (see heldLockFile)
	grace    time.Duration
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [flags] NAME -- CMD [ARGS...]",
		Short: "Run a command while holding a lock",
		Long: `Run takes the lock NAME, runs CMD with it held, and releases it when CMD and
every process of CMD's process group have ended; it exits with CMD's status.

CMD gets DLOCK_TOKEN (the fencing token, a decimal number that strictly
increases for NAME in the order the lock is granted) and DLOCK_NAME in its
environment. Pass the token to whatever CMD writes to, and have it refuse
tokens older than the last it saw.

What the lock covers:
  Processes  CMD runs in a process group of its own; the lock is held until
             no process of that group is left, so a background process CMD
             started (sh -c 'work &') keeps it held after CMD exits. A process
             that leaves the group (setsid, a daemon) is neither waited for
             nor signalled.
  Loss       The lock is renewed every TTL/3. If it is lost (the engine
             dropped it, or renewals failed until shortly before the engine
             would), the group gets SIGTERM (and SIGCONT) at once and SIGKILL
             after --grace, even if CMD itself has exited; exit 76.
  Signals    Every signal dlock can catch is forwarded to the group (HUP,
             INT, QUIT, TERM, USR1, USR2, WINCH, ALRM, ...), and dlock keeps
             the lock until the group has ended. A SIGPIPE from dlock's own
             stderr is ignored.
  dlock dies If dlock is killed (SIGKILL, the OOM killer, a crash), the group
             is killed with SIGKILL: CMD by the kernel (parent-death signal),
             the rest by a guard process (/bin/sh). CMD starts only once the
             guard knows its group: a /bin/sh gate execs it, so CMD's argv[0]
             is its path, the shell sets PWD, and a file without #! runs as
             a shell script. Without /bin/sh there is no guard (dlock warns)
             and CMD starts directly. TTL engines free the lock
             only after --ttl; file:// keeps it, through the guard, until the
             group has gone.
  Terminal   If dlock runs in the foreground of its terminal, CMD's group gets
             the terminal: CMD can read it, and Ctrl-C, Ctrl-\ and Ctrl-Z go to
             it. dlock takes the terminal back when the group has ended.
  Ctrl-Z     On a terminal, when CMD is stopped (Ctrl-Z, CMD reading the
             terminal from the background, or SIGTSTP sent to dlock and
             forwarded), dlock stops the rest of the group and then itself,
             and the shell sees the job stopped. A stopped dlock does not
             renew the lock: a TTL engine drops it after --ttl and another
             holder may run, while CMD stands still. On fg or bg dlock
             continues CMD only if the engine confirms it still holds the
             lock with CMD's token; otherwise CMD is terminated as on a loss
             (exit 76). A file:// lock does not expire. Without a terminal
             (cron, a script) dlock stays up and renews the lock while CMD
             is stopped; SIGCONT to dlock continues CMD. Ctrl-Z while dlock
             waits for the lock stops dlock.
  SIGSTOP    cannot be caught: a dlock stopped with it leaves CMD running
             unrenewed, like any paused holder - which is what the fencing
             token is for.

Exit status:
  0-125  CMD's own exit status
  64     bad usage (flags, arguments)
  69     the engine is unreachable (no answer within 10s of connecting, or
         down when --wait ended) or misconfigured (--backend, DLOCK_BACKEND;
         mem:// is refused: it cannot keep another dlock process out)
  75     lock not acquired: held elsewhere with --no-wait or --wait 0, or
         --wait elapsed
  76     the lock was lost while CMD ran; CMD was terminated
  126    CMD could not be executed
  127    CMD was not found
  128+N  CMD died of signal N, or dlock was interrupted by signal N while
         waiting for the lock (130 for SIGINT); nothing is left queued`,
		Example: `  dlock run nightly-report -- ./report.sh
  dlock run --shared catalog -- ./read-catalog.sh     # readers together; dlock run catalog -- ... writes
  dlock run --limit 5 payment-api -- ./charge.sh       # at most 5 at once
  dlock run --no-wait --ttl 30s deploy -- make deploy
  DLOCK_BACKEND=etcd://10.0.0.1:2379 dlock run --wait 1m db-migrate -- ./migrate --fence "$DLOCK_TOKEN"`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return o.runE(cmd, args) },
	}
	f := cmd.Flags()
	o.addFlags(cmd)
	f.BoolVar(&o.shared, "shared", false, "take NAME as a reader of a read-write lock: readers run together, never with a writer (a plain dlock run NAME is the writer)")
	f.IntVar(&o.limit, "limit", 0, "take one of N permits of the semaphore NAME: at most N commands run at once (every dlock run of NAME must give the same N)")
	return cmd
}

// addFlags adds the flags run and elect share.
func (o *runOpts) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.backend, "backend", "", "engine URL (default $"+envBackend+", else "+defaultBackend+")")
	f.DurationVar(&o.ttl, "ttl", dlock.DefaultTTL, "how long the engine keeps the lock if dlock stops renewing it (a crashed dlock's lock frees after this); at least 1s")
	f.DurationVar(&o.wait, "wait", 0, "give up (exit 75) if the lock is not granted within this long; 0 tries once, like --no-wait (default: wait forever)")
	f.BoolVar(&o.noWait, "no-wait", false, "exit 75 at once if the lock is held elsewhere")
	f.DurationVar(&o.grace, "grace", 5*time.Second, "after a lost lock, time between SIGTERM and SIGKILL to CMD")
}

// runE checks the flags of run and elect and runs the command under the
// lock.
func (o runOpts) runE(cmd *cobra.Command, args []string) error {
	name, argv, err := splitRunArgs(cmd, args)
	if err != nil {
		return err
	}
	if o.ttl < minRunTTL {
		return usagef(cmd, "--ttl %v: want at least %v, such as 15s (renewals run every TTL/3)", o.ttl, minRunTTL)
	}
	if o.grace < 0 {
		return usagef(cmd, "--grace %v: want a duration >= 0", o.grace)
	}
	if o.wait < 0 {
		return usagef(cmd, "--wait %v: want a duration >= 0 (0 tries once; omit it to wait forever)", o.wait)
	}
	if !o.elect && cmd.Flags().Changed("limit") && o.limit < 1 {
		return usagef(cmd, "--limit %d: want a number of permits >= 1", o.limit)
	}
	if o.shared && o.limit > 0 {
		return usagef(cmd, "--shared and --limit contradict each other: a semaphore's permits have no reader mode")
	}
	if o.noWait && cmd.Flags().Changed("wait") {
		return usagef(cmd, "--wait and --no-wait contradict each other: give one")
	}
	switch {
	case o.noWait:
		o.once = "--no-wait"
	case cmd.Flags().Changed("wait") && o.wait == 0:
		o.once = "--wait " + o.wait.String()
	}
	return runLocked(cmd.Context(), o, name, argv, cmd.OutOrStdout(), cmd.ErrOrStderr())
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
	if u, err := parseURL(url); err == nil && u.Scheme == "mem" {
		return exitf(exitUnavailable, "backend %s: an in-process engine cannot keep another dlock process out: use file:// on one host, or a shared engine (--backend or %s)", url, envBackend)
	}
	c, err := openBackend(ctx, url, dlock.WithTTL(o.ttl))
	if err != nil {
		return err
	}
	defer c.Close()

	lease, err := acquire(ctx, c, o, name)
	if err != nil {
		return err
	}
	if o.lockFile = heldLockFile(lease); o.lockFile != nil {
		defer o.lockFile.Close()
	}
	code, lost, childErr := supervise(ctx, c, lease, o, argv, stdout, stderr)

	// Release even if dlock was interrupted: the lock is ours to give back.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ttl)
	defer cancel()
	uerr := lease.Unlock(uctx)
	switch {
	case lost != nil || errors.Is(lease.Err(), dlock.ErrLockLost) || errors.Is(uerr, dlock.ErrLockLost):
		// Either we saw the loss and stopped the command, or the engine had
		// already dropped the lock when the command finished: in both cases
		// the command may have run without the lock.
		why := lost
		switch {
		case why != nil:
		case errors.Is(lease.Err(), dlock.ErrLockLost):
			why = lease.Err()
		default:
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
	lock, try := m.Lock, m.TryLock
	switch {
	case o.elect:
		e := c.Election(name)
		lock = func(ctx context.Context) (*dlock.Lease, error) { return leaseOf(e.Campaign(ctx, o.value)) }
		try = func(ctx context.Context) (*dlock.Lease, error) { return leaseOf(e.TryCampaign(ctx, o.value)) }
	case o.shared:
		rw := c.RWMutex(name)
		lock, try = rw.RLock, rw.TryRLock
	case o.limit > 0:
		sem := c.Semaphore(name, o.limit)
		lock, try = sem.Acquire, sem.TryAcquire
	}
	var (
		lease *dlock.Lease
		err   error
	)
	switch {
	case o.once != "":
		lease, err = try(ctx)
	case o.wait > 0:
		wctx, cancel := context.WithTimeout(ctx, o.wait)
		lease, err = lock(wctx)
		cancel()
	default:
		lease, err = lock(ctx)
	}
	switch {
	case err == nil:
		return lease, nil
	case ctx.Err() != nil:
		return nil, interrupted(ctx, fmt.Sprintf("while waiting for lock %q (nothing left queued)", name))
	case errors.Is(err, dlock.ErrNotAcquired):
		return nil, exitf(exitNotAcquired, "lock %q is held elsewhere (%s)", name, o.once)
	case errors.Is(err, dlock.ErrUnavailable):
		// The engine failed on the last try: say so (69), even when
		// --wait ended the waiting, rather than "held elsewhere".
	case errors.Is(err, context.DeadlineExceeded) && o.wait > 0:
		return nil, exitf(exitNotAcquired, "lock %q not acquired within --wait %v", name, o.wait)
	case errors.Is(err, dlock.ErrInvalidArgument):
		return nil, exitf(exitUsage, "%v", err)
	case errors.Is(err, dlock.ErrNotSupported):
		return nil, exitf(exitUsage, "%v (the engine at %s does not offer it)", err, redactURL(backendURL(o.backend)))
	}
	return nil, exitf(exitUnavailable, "acquiring %q on %s: %v\ncheck that the engine is running and reachable", name, redactURL(backendURL(o.backend)), err)
}

// lookPath finds CMD, mapping failures to exit codes 127 and 126.
func lookPath(file string) (string, error) {
	path, err := exec.LookPath(file)
	if err != nil {
		code := exitNotFound
		if errors.Is(err, os.ErrPermission) {
			code = exitCannotExec
		}
		return "", exitf(code, "cannot run %q: %v", file, err)
	}
	return path, nil
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

func leaseOf(l *dlock.Leadership, err error) (*dlock.Lease, error) {
	if err != nil {
		return nil, err
	}
	return l.Lease, nil
}
