package etcdlock

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/testserver"
)

// BenchmarkRenew times a held lock's Renew (a keep-alive and a check of the
// key) and, in the same iteration, a compare-only Txn (what the check was:
// served from the member's own state) and a linearizable Get (what it is
// now: confirmed by the leader with a quorum). It reports each one's median.
func BenchmarkRenew(b *testing.B) {
	cli := newClient(b, testserver.Etcd(b))
	ctx := context.Background()
	d, err := NewDriver(cli, &Options{Prefix: "dlockbench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	l, _, err := d.Acquire(ctx, driver.Request{Name: benchName(b), TTL: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	key := l.(*lock).key
	var renew, compare, get []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := l.Renew(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).Commit(); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := cli.Get(ctx, key, clientv3.WithCountOnly()); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		renew, compare, get = append(renew, t1.Sub(t0)), append(compare, t2.Sub(t1)), append(get, t3.Sub(t2))
	}
	b.ReportMetric(scenario.Ms(scenario.Median(renew)), "renew-p50-ms")
	b.ReportMetric(scenario.Ms(scenario.Median(compare)), "compare-txn-p50-ms")
	b.ReportMetric(scenario.Ms(scenario.Median(get)), "linearizable-get-p50-ms")
	if err := l.Release(ctx); err != nil {
		b.Fatal(err)
	}
}
