package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
)

func newElectCmd() *cobra.Command {
	o := runOpts{elect: true}
	cmd := &cobra.Command{
		Use:   "elect [flags] NAME -- CMD [ARGS...]",
		Short: "Run a command while this process leads the election NAME",
		Long: `Elect campaigns in the election NAME and runs CMD while this process leads:
one active instance of a service among many. The leader's value (--value,
default HOST:PID) is what 'dlock leader NAME' shows to everyone.

CMD gets DLOCK_TOKEN (the leader's term: it strictly increases from one
leader to the next; pass it with what CMD writes, so that a deposed leader's
late writes can be refused) and DLOCK_NAME.

Leadership is the exclusive lock NAME, held exactly as 'dlock run' holds a
lock: it covers CMD's whole process group, it is renewed every TTL/3, and the
moment it is lost CMD gets SIGTERM, then SIGKILL after --grace (exit 76).
Signals, the terminal, Ctrl-Z and the exit statuses are those of 'dlock run'
(see dlock run --help). When CMD ends, leadership is given up and the next
candidate leads.`,
		Example: `  dlock elect --value "$(hostname):8080" billing-service -- ./billing --serve
  dlock leader --watch billing-service`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("value") {
				host, _ := os.Hostname()
				o.value = fmt.Sprintf("%s:%d", host, os.Getpid())
			}
			return o.runE(cmd, args)
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&o.value, "value", "", "the leader's value, shown by dlock leader (default HOST:PID)")
	return cmd
}

func newLeaderCmd() *cobra.Command {
	var (
		backend string
		watch   bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "leader [flags] NAME",
		Short: "Show the leader of the election NAME, or follow it",
		Long: `Leader prints the current leader of the election NAME (its value and term),
or "no leader". With --watch it prints a line at every change (a new leader,
a new value, nobody) until interrupted; a slow reader may miss leaders in
between but always sees the latest, and terms never go back.

Exit status: 0 on success (with or without a leader), 64 bad usage, 69
engine unreachable or misconfigured, or one that does not offer elections.`,
		Example: `  dlock leader billing-service
  dlock leader --watch --json billing-service`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || args[0] == "" {
				return usagef(cmd, "want one election NAME, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			url := backendURL(backend)
			c, err := openBackend(ctx, url)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			fail := func(err error) error {
				switch {
				case ctx.Err() != nil:
					return interrupted(ctx, "while asking for the leader")
				case errors.Is(err, dlock.ErrNotSupported):
					return exitf(exitUnavailable, "%v (the engine at %s does not offer elections)", err, redactURL(url))
				}
				return exitf(exitUnavailable, "leader of %q on %s: %v", name, redactURL(url), err)
			}
			e := c.Election(name)
			if !watch {
				l, err := e.Leader(ctx)
				if err != nil {
					return fail(err)
				}
				return printLeader(out, name, l, asJSON)
			}
			ch, err := e.Observe(ctx)
			if err != nil {
				return fail(err)
			}
			for l := range ch {
				if err := printLeader(out, name, l, asJSON); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return interrupted(ctx, "while watching the leader")
			}
			return exitf(exitUnavailable, "watching the leader of %q on %s ended", name, redactURL(url))
		},
	}
	cmd.Flags().StringVar(&backend, "backend", "", "engine URL (default $"+envBackend+", else "+defaultBackend+")")
	cmd.Flags().BoolVar(&watch, "watch", false, "print every change of leader until interrupted")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON objects (one per line with --watch)")
	return cmd
}

type leaderJSON struct {
	Name   string  `json:"name"`
	Leader *string `json:"leader"` // null: no leader
	Term   *uint64 `json:"term"`
}

func printLeader(w io.Writer, name string, l dlock.Leader, asJSON bool) error {
	if asJSON {
		j := leaderJSON{Name: name}
		if l.Term != 0 {
			j.Leader, j.Term = &l.Value, &l.Term
		}
		return json.NewEncoder(w).Encode(j)
	}
	var err error
	if l.Term == 0 {
		_, err = fmt.Fprintln(w, "no leader")
	} else {
		_, err = fmt.Fprintf(w, "leader: %s (term %d)\n", l.Value, l.Term)
	}
	return err
}
