package redislock

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// TestEvictionPolicy: a node whose maxmemory-policy can evict any key (the
// fence counter too) is refused at Open and at the first lock of a client
// made with New; volatile-* (lock keys can go early, counters stay) and a
// configuration the server will not show are noted in Capabilities.
func TestEvictionPolicy(t *testing.T) {
	ctx := context.Background()
	shared := testserver.Redis(t)
	for _, tc := range []struct {
		name    string
		args    []string
		refused bool
		note    string
	}{
		{"allkeys-lru", []string{"--maxmemory-policy", "allkeys-lru", "--maxmemory", "100mb"}, true, ""},
		{"allkeys-random-no-maxmemory", []string{"--maxmemory-policy", "allkeys-random"}, true, ""},
		{"volatile-lru", []string{"--maxmemory-policy", "volatile-lru", "--maxmemory", "100mb"}, false, "maxmemory-policy volatile-lru"},
		{"config-renamed", []string{"--rename-command", "CONFIG", ""}, false, "maxmemory-policy not readable"},
		{"noeviction", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testserver.StartRedis(t, tc.args...)
			check := func(how string, c *dlock.Client, err error) {
				t.Helper()
				if tc.refused {
					if err == nil {
						t.Fatalf("%s: succeeded under maxmemory-policy %s", how, tc.name)
					}
					// A misconfigured engine: neither bad arguments nor a
					// failure that may pass.
					if errors.Is(err, dlock.ErrInvalidArgument) || errors.Is(err, dlock.ErrUnavailable) ||
						!strings.Contains(err.Error(), "maxmemory-policy") || !strings.Contains(err.Error(), "noeviction") {
						t.Errorf("%s: %v, want a configuration error naming maxmemory-policy and noeviction", how, err)
					}
					t.Logf("%s: %v", how, err)
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", how, err)
				}
				notes := c.Capabilities().Notes
				if tc.note != "" && !strings.Contains(notes, tc.note) {
					t.Errorf("%s: notes %q do not mention %q", how, notes, tc.note)
				}
				if tc.note == "" && strings.Contains(notes, p.Addr()) {
					t.Errorf("%s: notes mention the node: %q", how, notes)
				}
			}

			c, err := dlock.Open(ctx, "redis://"+p.Addr())
			check("Open", c, err)
			if c != nil {
				c.Close()
			}

			c = newClient(t, adminClient(t, p.Addr()))
			l, err := c.Mutex(uniqueName(t)).TryLock(ctx)
			if err == nil {
				l.Unlock(ctx)
			}
			check("TryLock via New", c, err)

			c, err = dlock.Open(ctx, "redlock://"+strings.Join([]string{shared[0], shared[1], p.Addr()}, ","))
			check("Open redlock", c, err)
			if c != nil {
				c.Close()
			}
		})
	}
}
