package etcdlock

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/drivertest"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/testserver"
)

// failovers is how many leaders each run cuts off.
const failovers = 10

// failoverTTL is the leaders' TTL: the test clusters' minimum.
const failoverTTL = 2 * time.Second

// BenchmarkFailover measures how long a waiting candidate takes to lead
// after the leader's client is cut off from etcd (every connection reset
// and refused, as a killed process's would be): from the cut to the return
// of the candidate's Campaign, against the TTL. dlock's Election and
// etcd's concurrency.Election, on the same cluster, each leader on a
// client of its own through a fault proxy. Run it once:
//
//	go test -run '^$' -bench Failover -benchtime 1x ./etcdlock/
func BenchmarkFailover(b *testing.B) {
	eps := testserver.Etcd(b)
	admin := newClient(b, eps)
	report := func(b *testing.B, ds, ends []time.Duration) {
		b.ReportMetric(float64(scenario.Percentile(ds, 0.5).Milliseconds()), "p50-ms")
		b.ReportMetric(float64(scenario.Percentile(ds, 0.99).Milliseconds()), "p99-ms")
		b.ReportMetric(float64(failoverTTL.Milliseconds()), "ttl-ms")
		if len(ends) > 0 {
			b.ReportMetric(float64(scenario.Percentile(ends, 0.5).Milliseconds()), "old-done-p50-ms")
		}
		b.ReportMetric(0, "ns/op")
		b.Logf("failovers (cut → new leader): %v; old leader's Done after the cut: %v", ds, ends)
	}
	b.Run("dlock", func(b *testing.B) {
		for range b.N {
			var ds, ends []time.Duration
			for range failovers {
				d, end := dlockFailover(b, eps, admin)
				ds, ends = append(ds, d), append(ends, end)
			}
			report(b, ds, ends)
		}
	})
	b.Run("concurrency.Election", func(b *testing.B) {
		for range b.N {
			var ds []time.Duration
			for range failovers {
				ds = append(ds, etcdFailover(b, eps, admin))
			}
			report(b, ds, nil)
		}
	})
}

// dlockFailover elects a leader, queues a candidate, cuts the leader off
// and returns how long after the cut the candidate led and the leader's
// Done closed. It fails if the candidate led before the leader's Done
// closed.
func dlockFailover(b *testing.B, eps []string, admin *clientv3.Client) (time.Duration, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := benchName(b)
	cl := newConn(b, eps)
	leader, err := New(cl.cli, &Options{Prefix: "dlocktest"}, dlock.WithTTL(failoverTTL))
	if err != nil {
		b.Fatal(err)
	}
	cand, err := New(newClient(b, eps), &Options{Prefix: "dlocktest"}, dlock.WithTTL(failoverTTL))
	if err != nil {
		b.Fatal(err)
	}
	defer cand.Close()
	l, err := leader.Election(name).Campaign(ctx, "old")
	if err != nil {
		b.Fatal(err)
	}
	type won struct {
		l  *dlock.Leadership
		at time.Time
	}
	got := make(chan won, 1)
	go func() {
		nl, err := cand.Election(name).Campaign(ctx, "new")
		if err != nil {
			b.Error(err)
		}
		got <- won{nl, time.Now()}
	}()
	queued(b, ctx, admin, "dlocktest/"+escapedName(name)+"/")
	ended := make(chan time.Time, 1)
	go func() { <-l.Done(); ended <- time.Now() }()
	cut := time.Now()
	undo, err := cl.fault("", drivertest.Fault{Down: true})
	if err != nil {
		b.Fatal(err)
	}
	w := <-got
	if w.l == nil {
		b.FailNow()
	}
	var end time.Duration
	select {
	case at := <-ended:
		end = at.Sub(cut)
		if at.After(w.at) {
			b.Errorf("new leader (term %d) elected %v before the cut-off leader's Done closed", w.l.Term(), at.Sub(w.at))
		}
	default:
		b.Errorf("new leader (term %d) elected before the cut-off leader's Done closed", w.l.Term())
	}
	if err := w.l.Resign(ctx); err != nil {
		b.Error(err)
	}
	undo()
	if err := leader.Close(); err != nil && !errors.Is(err, dlock.ErrLockLost) {
		b.Logf("closing the cut-off leader's client: %v", err)
	}
	return w.at.Sub(cut), end
}

// escapedName is name as the driver writes it in its keys.
func escapedName(name string) string {
	pfx := (&Driver{root: ""}).namePrefix(name)
	return pfx[:len(pfx)-1]
}

// etcdFailover is dlockFailover for concurrency.Election.
func etcdFailover(b *testing.B, eps []string, admin *clientv3.Client) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pfx := "etcd-election/" + benchName(b)
	cl := newConn(b, eps)
	ls, err := concurrency.NewSession(cl.cli, concurrency.WithTTL(int(failoverTTL/time.Second)))
	if err != nil {
		b.Fatal(err)
	}
	cs, err := concurrency.NewSession(newClient(b, eps), concurrency.WithTTL(int(failoverTTL/time.Second)))
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	if err := concurrency.NewElection(ls, pfx).Campaign(ctx, "old"); err != nil {
		b.Fatal(err)
	}
	ce := concurrency.NewElection(cs, pfx)
	got := make(chan time.Time, 1)
	go func() {
		if err := ce.Campaign(ctx, "new"); err != nil {
			b.Error(err)
		}
		got <- time.Now()
	}()
	queued(b, ctx, admin, pfx+"/")
	cut := time.Now()
	undo, err := cl.fault("", drivertest.Fault{Down: true})
	if err != nil {
		b.Fatal(err)
	}
	at := <-got
	if err := ce.Resign(ctx); err != nil {
		b.Error(err)
	}
	undo()
	ls.Orphan() // its lease expired: nothing to revoke
	return at.Sub(cut)
}

// queued waits, by watching, until the range under pfx has two keys.
func queued(b *testing.B, ctx context.Context, admin *clientv3.Client, pfx string) {
	b.Helper()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	wch := admin.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	<-wch
	for {
		r, err := admin.Get(wctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		if r.Count >= 2 {
			return
		}
		select {
		case <-wch:
		case <-wctx.Done():
			b.Fatalf("%q: %d keys after 10 s, want 2", pfx, r.Count)
		}
	}
}
