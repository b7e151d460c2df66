package zklock

import (
	"context"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/testserver"
)

// BenchmarkRenew times a held lock's Renew and, in the same iteration and
// so under the same load, the two requests a renewal could be made of: a
// read of the node (answered by the connected server alone) and a multi
// with a check of the node (a transaction the leader orders and a quorum
// logs). It reports each one's median.
func BenchmarkRenew(b *testing.B) {
	servers := testserver.ZooKeeper(b)
	ctx := context.Background()
	d, err := dialDriver(ctx, servers, Options{Prefix: testRoot, SessionTimeout: benchSession}, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	l, _, err := d.Acquire(ctx, driver.Request{Name: "bench/renew/" + newGUID(), TTL: benchSession})
	if err != nil {
		b.Fatal(err)
	}
	path := l.(*zkLock).path
	var renew, read, check []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := l.Renew(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, _, err := d.conn.Exists(path); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := d.conn.Multi(&zk.CheckVersionRequest{Path: path, Version: -1}); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		renew, read, check = append(renew, t1.Sub(t0)), append(read, t2.Sub(t1)), append(check, t3.Sub(t2))
	}
	b.ReportMetric(scenario.Ms(scenario.Median(renew)), "renew-p50-ms")
	b.ReportMetric(scenario.Ms(scenario.Median(read)), "read-p50-ms")
	b.ReportMetric(scenario.Ms(scenario.Median(check)), "check-write-p50-ms")
	if err := l.Release(ctx); err != nil {
		b.Fatal(err)
	}
}
