package dlock_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/memlock"
)

// observed is what a test's client reported through its telemetry.
type observed struct {
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	logs   *logRecorder
}

func telemetryOptions() (observed, []dlock.Option) {
	o := observed{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder(), logs: &logRecorder{}}
	return o, []dlock.Option{
		dlock.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(o.reader))),
		dlock.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(o.spans))),
		dlock.WithLogger(slog.New(o.logs)),
	}
}

// point is one data point: the metric, its attributes and its value (a
// histogram's count, a sum's value).
type point struct {
	metric string
	attrs  map[string]string
	value  int64
}

func (o observed) points(t *testing.T) []point {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := o.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	var ps []point
	attrs := func(s attribute.Set) map[string]string {
		m := map[string]string{}
		for _, kv := range s.ToSlice() {
			m[string(kv.Key)] = kv.Value.Emit()
		}
		return m
	}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/dlockio/dlock" || sm.Scope.Version == "" {
			t.Errorf("meter %q version %q, want the package's name and a version", sm.Scope.Name, sm.Scope.Version)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Unit != "s" {
					t.Errorf("%s: unit %q, want s", m.Name, m.Unit)
				}
				for _, dp := range d.DataPoints {
					ps = append(ps, point{m.Name, attrs(dp.Attributes), int64(dp.Count)})
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					ps = append(ps, point{m.Name, attrs(dp.Attributes), dp.Value})
				}
			default:
				t.Errorf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return ps
}

// value sums the points of metric whose attributes include want.
func value(ps []point, metric string, want map[string]string) int64 {
	var n int64
	for _, p := range ps {
		if p.metric != metric {
			continue
		}
		ok := true
		for k, v := range want {
			if p.attrs[k] != v {
				ok = false
			}
		}
		if ok {
			n += p.value
		}
	}
	return n
}

type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// find returns the attributes of the first record with msg.
func (r *logRecorder) find(msg string) (map[string]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Message != msg {
			continue
		}
		m := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			m[a.Key] = a.Value.String()
			return true
		})
		return m, true
	}
	return nil, false
}

// TestTelemetry: every acquiring call, hold, renewal and loss is counted
// with bounded attributes (never the lock's name), each acquiring call is
// a span, and a loss is logged with the lock's name and token.
func TestTelemetry(t *testing.T) {
	ctx := t.Context()
	e := memlock.NewEngine()
	o, opts := telemetryOptions()
	c, err := e.NewClient(append(opts, dlock.WithTTL(300*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other, err := e.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	l, err := c.Mutex("jobs/a").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ps := o.points(t); value(ps, "dlock.held", map[string]string{"dlock.primitive": "mutex"}) != 1 {
		t.Errorf("dlock.held while holding: %+v", ps)
	}
	// Renewals run every TTL/3 = 100ms: wait for two (there is no event
	// for a renewal to wait on; the lease's own timer drives them).
	deadline := time.Now().Add(10 * time.Second)
	for value(o.points(t), "dlock.renewal", map[string]string{"dlock.outcome": "ok"}) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no two successful renewals counted within 10s: %+v", o.points(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	held, err := other.Mutex("jobs/b").Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Mutex("jobs/b").TryLock(ctx); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := c.Mutex("jobs/b").Lock(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock past its deadline: %v", err)
	}
	cancel()
	held.Unlock(ctx)

	r, err := c.RWMutex("jobs/c").RLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.Drop("jobs/c")
	<-r.Done()
	// Done closes first; the loss is logged, then counted, right after it.
	for deadline := time.Now().Add(10 * time.Second); value(o.points(t), "dlock.loss", nil) < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}

	ps := o.points(t)
	for _, tc := range []struct {
		metric string
		attrs  map[string]string
		want   int64
	}{
		{"dlock.acquire.duration", map[string]string{"dlock.driver": "memlock", "dlock.primitive": "mutex", "dlock.outcome": "acquired"}, 1},
		{"dlock.acquire.duration", map[string]string{"dlock.primitive": "mutex", "dlock.outcome": "not_acquired"}, 1},
		{"dlock.acquire.duration", map[string]string{"dlock.primitive": "mutex", "dlock.outcome": "canceled"}, 1},
		{"dlock.acquire.duration", map[string]string{"dlock.primitive": "rwmutex.read", "dlock.outcome": "acquired"}, 1},
		{"dlock.hold.duration", map[string]string{"dlock.primitive": "mutex", "dlock.end": "released"}, 1},
		{"dlock.hold.duration", map[string]string{"dlock.primitive": "rwmutex.read", "dlock.end": "lost"}, 1},
		{"dlock.loss", map[string]string{"dlock.primitive": "rwmutex.read", "dlock.reason": "engine"}, 1},
		{"dlock.held", nil, 0},
		{"dlock.waiting", nil, 0},
	} {
		if got := value(ps, tc.metric, tc.attrs); got != tc.want {
			t.Errorf("%s %v = %d, want %d", tc.metric, tc.attrs, got, tc.want)
		}
	}
	allowed := []string{"dlock.driver", "dlock.primitive", "dlock.outcome", "dlock.end", "dlock.reason"}
	for _, p := range ps {
		for k, v := range p.attrs {
			if !slices.Contains(allowed, k) {
				t.Errorf("%s has attribute %s=%q: series must stay bounded", p.metric, k, v)
			}
		}
	}

	attrs, ok := o.logs.find("dlock: lease lost")
	if !ok || attrs["dlock.lock.name"] != "jobs/c" || attrs["dlock.reason"] != "engine" || attrs["dlock.token"] == "" {
		t.Errorf("loss log: %v (found %v)", attrs, ok)
	}

	var names []string
	for _, s := range o.spans.Ended() {
		names = append(names, s.Name())
		if s.Name() == "dlock rlock" {
			got := map[string]string{}
			for _, kv := range s.Attributes() {
				got[string(kv.Key)] = kv.Value.Emit()
			}
			if got["dlock.lock.name"] != "jobs/c" || got["dlock.outcome"] != "acquired" || got["dlock.token"] != "3" {
				t.Errorf("rlock span attributes: %v", got)
			}
		}
	}
	if want := []string{"dlock lock", "dlock trylock", "dlock lock", "dlock rlock"}; !slices.Equal(names, want) {
		t.Errorf("spans %q, want %q", names, want)
	}
}

// TestTelemetryRenewalFailure: failed renewals are counted and logged, and
// the loss at the safety deadline has its reason.
func TestTelemetryRenewalFailure(t *testing.T) {
	o, opts := telemetryOptions()
	s := &stub{renew: func(context.Context) error { return errors.New("engine gone") }}
	c := newStubClient(t, s, append(opts, dlock.WithTTL(300*time.Millisecond))...)
	l, err := c.Mutex("x").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	// Done closes first; the loss is counted right after it.
	for deadline := time.Now().Add(10 * time.Second); value(o.points(t), "dlock.loss", nil) < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	ps := o.points(t)
	if n := value(ps, "dlock.renewal", map[string]string{"dlock.outcome": "error"}); n < 1 {
		t.Errorf("failed renewals counted: %d", n)
	}
	if n := value(ps, "dlock.loss", map[string]string{"dlock.reason": "deadline", "dlock.driver": "dlock_test"}); n != 1 {
		t.Errorf("losses at the deadline counted: %d (%+v)", n, ps)
	}
	if attrs, ok := o.logs.find("dlock: renewal failed"); !ok || attrs["dlock.lock.name"] != "x" || attrs["error"] != "engine gone" {
		t.Errorf("renewal failure log: %v (found %v)", attrs, ok)
	}
}

// connDriver is a driver that reports its connection's changes.
type connDriver struct {
	manyDriver
	notify func(up bool, detail string)
}

func (d *connDriver) NotifyConn(f func(up bool, detail string)) { d.notify = f }

// TestTelemetryConnection: a driver's news of its connection to the engine
// is logged, with the driver and the number of leases held.
func TestTelemetryConnection(t *testing.T) {
	d := &connDriver{}
	logs := &logRecorder{}
	c, err := dlock.NewClient(d, dlock.WithLogger(slog.New(logs)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d.notify == nil {
		t.Fatal("the client did not ask the driver for news of its connection")
	}
	l, err := c.Mutex("a").Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
	d.notify(false, "127.0.0.1:1: connection refused")
	d.notify(true, "127.0.0.1:1")
	for msg, detail := range map[string]string{
		"dlock: engine connection lost":     "127.0.0.1:1: connection refused",
		"dlock: engine connection restored": "127.0.0.1:1",
	} {
		attrs, ok := logs.find(msg)
		if !ok {
			t.Errorf("no %q in the log", msg)
			continue
		}
		if attrs["detail"] != detail || attrs["dlock.held"] != "1" || attrs["dlock.driver"] != "dlock_test" {
			t.Errorf("%q logged with %v; want detail %q, dlock.held 1, dlock.driver dlock_test", msg, attrs, detail)
		}
	}

	// Without a logger the driver is not asked.
	d2 := &connDriver{}
	c2, err := dlock.NewClient(d2)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if d2.notify != nil {
		t.Error("a client without a logger asked the driver for news of its connection")
	}
}
