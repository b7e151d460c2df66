package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
)

func newListCmd() *cobra.Command {
	var (
		backend string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "list [flags] [PREFIX]",
		Short: "List the locks held or awaited, under a prefix",
		Long: `List shows every lock held or awaited now whose name starts with PREFIX (all,
without one): its holder's token, TTL left, waiters, and for read-write locks
and semaphores the readers or permits in use. Names are shown as given; a
name too long for the engine to keep is shown by its hash ("~...") and only
without a PREFIX. Engines that cannot enumerate their locks make list exit 1
and say so; use 'dlock status NAME' for one name.

Exit status: 0 on success (with or without locks), 64 bad usage, 69 engine
unreachable or misconfigured, 1 if the engine's driver cannot list.`,
		Example: `  dlock list jobs/
  dlock list --json --backend etcd://127.0.0.1:2379 | jq '.[].name'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef(cmd, "want at most one PREFIX, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			url := backendURL(backend)
			c, err := openBackend(ctx, url)
			if err != nil {
				return err
			}
			defer c.Close()
			ls, err := c.List(ctx, prefix)
			switch {
			case errors.Is(err, dlock.ErrNotSupported):
				return exitf(exitFailure, "the driver for %s cannot list locks; use 'dlock status NAME' for one name", redactURL(url))
			case ctx.Err() != nil:
				return interrupted(ctx, "while listing")
			case err != nil:
				return exitf(exitUnavailable, "listing %q on %s: %v", prefix, redactURL(url), err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				js := make([]lockStatus, 0, len(ls))
				for _, l := range ls {
					js = append(js, statusJSON(l.Name, redactURL(url), l.Status))
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(js)
			}
			if len(ls) == 0 {
				fmt.Fprintf(out, "no locks held or awaited under %q\n", prefix)
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTOKEN\tTTL LEFT\tWAITERS\tHOLDERS")
			for _, l := range ls {
				st := l.Status
				token, ttl, waiters, holders := "-", "-", "?", "-"
				if st.Held {
					token = fmt.Sprint(st.Token)
					holders = fmt.Sprint(st.Holders)
					switch {
					case st.Limit > 0:
						holders = fmt.Sprintf("%d of %d permits", st.Holders, st.Limit)
					case st.Mode == dlock.Shared:
						holders = fmt.Sprintf("%d readers", st.Holders)
					}
					if st.TTLLeft > 0 {
						ttl = st.TTLLeft.Round(1e6).String()
					}
				}
				if st.Waiters >= 0 {
					waiters = fmt.Sprint(st.Waiters)
				}
				fmt.Fprintf(tw, "%q\t%s\t%s\t%s\t%s\n", l.Name, token, ttl, waiters, holders)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&backend, "backend", "", "engine URL (default $"+envBackend+", else "+defaultBackend+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of the status objects 'dlock status --json' prints")
	return cmd
}
