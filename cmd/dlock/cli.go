package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/redact"
	// Drivers register their URL schemes in init.
	_ "github.com/dlockio/dlock/etcdlock"
	_ "github.com/dlockio/dlock/filelock"
	_ "github.com/dlockio/dlock/memlock"
	_ "github.com/dlockio/dlock/pglock"
	_ "github.com/dlockio/dlock/redislock"
	_ "github.com/dlockio/dlock/zklock"
)

// Exit codes shared by the subcommands (after sysexits.h where one fits).
const (
	exitOK          = 0
	exitFailure     = 1  // anything else that went wrong
	exitUsage       = 64 // EX_USAGE: bad flags or arguments
	exitUnavailable = 69 // EX_UNAVAILABLE: engine unreachable or misconfigured
	exitNotAcquired = 75 // EX_TEMPFAIL: lock not acquired (--no-wait, --wait elapsed)
	exitLost        = 76 // the lease was lost while the command ran
	exitCannotExec  = 126
	exitNotFound    = 127
	exitSignalBase  = 128 // + signal number: dlock or its child died of a signal
)

// envBackend names the environment variable read when --backend is not given.
const envBackend = "DLOCK_BACKEND"

// defaultBackend is used when neither --backend nor DLOCK_BACKEND is set.
const defaultBackend = "file://"

// exitError carries the process's exit code. Run prints its message (if
// any) before returning it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func exitf(code int, format string, args ...any) *exitError {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// exitCode maps an error returned by Run to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

// signalCause is the cancellation cause of the context main hands to Run.
type signalCause struct{ sig os.Signal }

func (s signalCause) Error() string { return "interrupted by " + s.sig.String() }

type signalsKey struct{}

// withSignals attaches the channel on which main relays every signal it
// receives, for `dlock run` to forward them to its child.
func withSignals(ctx context.Context, ch <-chan os.Signal) context.Context {
	return context.WithValue(ctx, signalsKey{}, ch)
}

func signalsFrom(ctx context.Context) <-chan os.Signal {
	ch, _ := ctx.Value(signalsKey{}).(<-chan os.Signal)
	return ch
}

// interrupted returns the exit error for a context ended by a signal (or
// plain cancellation, taken as SIGINT).
func interrupted(ctx context.Context, while string) *exitError {
	var sc signalCause
	sig := syscall.SIGINT
	if errors.As(context.Cause(ctx), &sc) {
		if s, ok := sc.sig.(syscall.Signal); ok {
			sig = s
		}
	}
	return &exitError{code: exitSignalBase + int(sig), err: fmt.Errorf("interrupted by %v %s", sig, while)}
}

// Run runs the dlock command line args (without the program name), writing
// to stdout and stderr. The returned error carries the exit code (see
// exitCode); its message has already been written to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return nil
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		// Cobra's own errors: unknown command or flag, wrong argument count.
		ee = &exitError{code: exitUsage, err: fmt.Errorf("%v\nRun 'dlock --help' for usage.", err)}
		if c, _, ferr := root.Find(args); ferr == nil && c != root {
			ee.err = fmt.Errorf("%v\nRun '%s --help' for usage.", err, c.CommandPath())
		}
	}
	if msg := ee.Error(); msg != "" {
		fmt.Fprintf(stderr, "dlock: %s\n", msg)
	}
	return ee
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "dlock",
		Short: "Distributed locks from the command line",
		Long: `dlock takes named locks on a lock engine: a file on this host, Redis, etcd,
ZooKeeper, or an in-process engine.

The engine is chosen by --backend URL or the DLOCK_BACKEND environment
variable; the default is ` + defaultBackend + ` (lock files in your runtime directory).
Registered URL schemes: ` + strings.Join(dlock.Schemes(), ", ") + `.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: fmt.Errorf("%v\nRun '%s --help' for usage.", err, c.CommandPath())}
	})
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newRunCmd(), newElectCmd(), newLeaderCmd(), newDemoCmd(), newBenchCmd(), newStatusCmd(), newListCmd(), newVersionCmd())
	return root
}

// backendURL returns the engine URL from the flag, the environment or the
// default, in that order.
func backendURL(flag string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv(envBackend); v != "" {
		return v
	}
	return defaultBackend
}

// openTimeout bounds how long a command waits for the engine to answer
// when it connects. Some drivers wait for as long as their context lets
// them (zk:// waits for a session); a command must not hang on an engine
// that is not there.
const openTimeout = 10 * time.Second

// openWithin opens a client, giving up after openTimeout.
func openWithin(ctx context.Context, url string, opts ...dlock.Option) (*dlock.Client, error) {
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	c, err := dlock.Open(octx, url, opts...)
	if err != nil && ctx.Err() == nil && octx.Err() != nil {
		err = fmt.Errorf("no answer within %v: %w", openTimeout, err)
	}
	return c, err
}

// openBackend opens a client (openWithin), turning failures into exit
// code 69 with a hint about what to check.
func openBackend(ctx context.Context, url string, opts ...dlock.Option) (*dlock.Client, error) {
	c, err := openWithin(ctx, url, opts...)
	if err == nil {
		return c, nil
	}
	if ctx.Err() != nil {
		return nil, interrupted(ctx, "while connecting")
	}
	hint := "check that the engine is running and reachable, or choose another with --backend or " + envBackend
	if errors.Is(err, dlock.ErrInvalidArgument) {
		hint = "fix the URL given by --backend or " + envBackend + " (e.g. file://, etcd://host:2379, redis://host:6379, zk://host:2181)"
	}
	return nil, exitf(exitUnavailable, "backend %s: %v\n%s", redactURL(url), err, hint)
}

func parseURL(raw string) (*url.URL, error) { return url.Parse(raw) }

// redactURL hides credentials in a backend URL for messages, as the
// library's own errors do.
func redactURL(raw string) string { return redact.String(raw) }

// usagef reports bad usage (exit 64), naming the command's help.
func usagef(cmd *cobra.Command, format string, args ...any) *exitError {
	return &exitError{code: exitUsage, err: fmt.Errorf("%s\nRun '%s --help' for usage.", fmt.Sprintf(format, args...), cmd.CommandPath())}
}
