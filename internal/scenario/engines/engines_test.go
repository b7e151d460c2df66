package engines_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	_ "github.com/dlockio/dlock/etcdlock"
	_ "github.com/dlockio/dlock/filelock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
	"github.com/dlockio/dlock/internal/testserver"
	_ "github.com/dlockio/dlock/memlock"
	_ "github.com/dlockio/dlock/redislock"
	_ "github.com/dlockio/dlock/zklock"
)

// TestOf runs the shared counter on every engine, each worker's counter
// found through its client's driver as `dlock demo` finds it.
func TestOf(t *testing.T) {
	urls := map[string]func(t *testing.T) string{
		"mem":     func(*testing.T) string { return "mem://engines-test" },
		"file":    func(t *testing.T) string { return "file://" + t.TempDir() },
		"redis":   func(t *testing.T) string { return "redis://" + testserver.Redis(t)[0] },
		"redlock": func(t *testing.T) string { return "redlock://" + strings.Join(testserver.Redis(t), ",") },
		"etcd": func(t *testing.T) string {
			return "etcd://" + strings.Join(testserver.Etcd(t), ",") + "/dlock-engines-test"
		},
		"zk": func(t *testing.T) string {
			return "zk://" + strings.Join(testserver.ZooKeeper(t), ",") + "/dlock-engines-test"
		},
	}
	for _, engine := range []string{"mem", "file", "redis", "redlock", "etcd", "zk"} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			url := urls[engine](t)
			var ls []scenario.Locker
			var cs []scenario.Counter
			for range 3 {
				// A TTL other than the default: zk:// then moves to a
				// session of that timeout and closes its first one.
				c, err := dlock.Open(ctx, url, dlock.WithTTL(5*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				counter, err := engines.Of(c)
				if err != nil {
					t.Fatal(err)
				}
				ls, cs = append(ls, scenario.Client(c)), append(cs, counter)
			}
			r, err := scenario.SharedCounter(ctx, ls, cs, scenario.CounterConfig{Name: "engines-test-" + engine, Increments: 10, FailFast: true})
			if err != nil {
				t.Fatal(err)
			}
			if r.Final != 30 || r.Lost() != 0 {
				t.Fatalf("counter %d, want 30 (%d lost)", r.Final, r.Lost())
			}
			if err := r.OrderErr(); err != nil {
				t.Fatal(err)
			}
			if v, err := cs[0].Get(ctx, "engines-test-"+engine); v != 0 || err != nil {
				t.Fatalf("counter left behind: %d, %v", v, err)
			}
		})
	}
}
