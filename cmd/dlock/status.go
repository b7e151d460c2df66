package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dlockio/dlock"
)

func newStatusCmd() *cobra.Command {
	var (
		backend string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "status [flags] NAME",
		Short: "Show who holds a lock, with which token, and how many wait",
		Long: `Status asks the engine about the lock NAME without taking it: whether it is
held, the holder's fencing token, how long until the engine drops it unless
renewed, and how many wait for it. Not every engine can tell all of this;
what it cannot tell is shown as "unknown" (null in --json).

Exit status: 0 on success (held or not), 64 bad usage, 69 engine
unreachable or misconfigured, 1 if the engine's driver cannot report status.`,
		Example: `  dlock status nightly-report
  dlock status --json --backend etcd://127.0.0.1:2379 deploy | jq .held`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || args[0] == "" {
				return usagef(cmd, "want one lock NAME, got %d arguments", len(args))
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
			st, err := c.Status(ctx, name)
			switch {
			case errors.Is(err, errors.ErrUnsupported):
				return exitf(exitFailure, "the driver for %s cannot report a lock's status without taking it; "+
					"use 'dlock run --no-wait %s -- true' to test whether it is free", redactURL(url), name)
			case ctx.Err() != nil:
				return interrupted(ctx, "while asking for the status")
			case errors.Is(err, dlock.ErrInvalidArgument):
				return exitf(exitUsage, "%v", err)
			case err != nil:
				return exitf(exitUnavailable, "status of %q on %s: %v", name, redactURL(url), err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(statusJSON(name, redactURL(url), st))
			}
			fmt.Fprintf(out, "lock:     %s\nbackend:  %s\n", name, redactURL(url))
			if st.Held {
				fmt.Fprintf(out, "held:     yes\ntoken:    %d\n", st.Token)
				switch {
				case st.Limit > 0:
					fmt.Fprintf(out, "permits:  %d of %d in use\n", st.Holders, st.Limit)
				case st.Mode == dlock.Shared:
					fmt.Fprintf(out, "readers:  %d\n", st.Holders)
				}
				if st.TTLLeft > 0 {
					fmt.Fprintf(out, "ttl left: %v\n", st.TTLLeft.Round(1e6))
				} else {
					fmt.Fprintf(out, "ttl left: unknown\n")
				}
			} else {
				fmt.Fprintf(out, "held:     no\n")
			}
			if st.Waiters >= 0 {
				fmt.Fprintf(out, "waiters:  %d\n", st.Waiters)
			} else {
				fmt.Fprintf(out, "waiters:  unknown (the engine cannot tell)\n")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&backend, "backend", "", "engine URL (default $"+envBackend+", else "+defaultBackend+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object for scripts")
	return cmd
}

type lockStatus struct {
	Name    string   `json:"name"`
	Backend string   `json:"backend"`
	Held    bool     `json:"held"`
	Token   *uint64  `json:"token"`      // null when not held
	TTLLeft *float64 `json:"ttl_left_s"` // null when not held or unknown
	Waiters *int     `json:"waiters"`    // null when the engine cannot tell
	Mode    *string  `json:"mode"`       // "exclusive" or "shared"; null when not held
	Holders *int     `json:"holders"`    // readers or permits in use; null when not held or unknown
	Limit   *int     `json:"limit"`      // a semaphore's permits; null for a lock or when unknown
}

func statusJSON(name, backend string, st dlock.Status) lockStatus {
	s := lockStatus{Name: name, Backend: backend, Held: st.Held}
	if st.Held {
		token, mode := st.Token, st.Mode.String()
		s.Token, s.Mode = &token, &mode
		if ttl := st.TTLLeft.Seconds(); ttl > 0 {
			s.TTLLeft = &ttl
		}
		if h := st.Holders; h > 0 {
			s.Holders = &h
		}
	}
	if l := st.Limit; l > 0 {
		s.Limit = &l
	}
	if w := st.Waiters; w >= 0 {
		s.Waiters = &w
	}
	return s
}
