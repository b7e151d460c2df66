package dlock

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"reflect"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
)

// instrumentationName names the meter and the tracer, after the package.
const instrumentationName = "github.com/dlockio/dlock"

// instrumentationVersion is the version of the instrumentation (the
// metrics' names, units and attributes), reported with the meter.
const instrumentationVersion = "0.1.0"

// WithMeterProvider sets where the client's metrics go (default: the
// global otel.GetMeterProvider(), a no-op until the program sets one).
// The metrics, all with the attributes dlock.driver (the driver's package,
// "etcdlock") and dlock.primitive (mutex, rwmutex.read, rwmutex.write,
// semaphore, election), never the lock's name:
//
//   - dlock.acquire.duration (s, histogram): a Lock, RLock, Acquire or
//     Campaign call, with dlock.outcome acquired, not_acquired, canceled
//     or error;
//   - dlock.hold.duration (s, histogram): a lease from grant to end, with
//     dlock.end released, lost or closed;
//   - dlock.held and dlock.waiting ({lock}, up-down counters): leases held
//     and blocking calls waiting now;
//   - dlock.renewal ({renewal}, counter), with dlock.outcome ok, error or
//     lost;
//   - dlock.loss ({loss}, counter), with dlock.reason engine (the engine
//     reported it), renewal (a renewal found it gone), deadline (renewals
//     failed until the safety deadline) or max_hold.
//
// It is a client option: given to Client.Mutex and the like it has no
// effect.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.meterProvider = mp }
}

// WithTracerProvider sets where the client's spans go (default: the global
// otel.GetTracerProvider()). Each acquiring call is one span, "dlock lock"
// (or rlock, acquire, campaign, and their try forms), with dlock.driver,
// dlock.primitive and dlock.lock.name, and on success dlock.token. Spans,
// unlike metrics, carry the lock's name. It is a client option.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracerProvider = tp }
}

// WithLogger sets a logger for what happens to leases in the background:
// renewal failures, losses, releases that fail, each with the lock's name
// and token (dlock.lock.name, dlock.token); and, for drivers that tell
// (driver.ConnNotifier), the loss and return of the connection to the
// engine, with the number of leases held then (dlock.held). Default:
// silent. It is a client option.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

type primitive int

const (
	primMutex primitive = iota
	primRead
	primWrite
	primSemaphore
	primElection
	numPrims
)

var primNames = [numPrims]string{"mutex", "rwmutex.read", "rwmutex.write", "semaphore", "election"}

type outcome int

const (
	outAcquired outcome = iota
	outNotAcquired
	outCanceled
	outError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"acquired", "not_acquired", "canceled", "error"}

type holdEnd int

const (
	endReleased holdEnd = iota
	endLost
	endClosed
	numEnds
)

var endNames = [numEnds]string{"released", "lost", "closed"}

type renewOutcome int

const (
	renewOK renewOutcome = iota
	renewError
	renewLost
	numRenewOutcomes
)

var renewNames = [numRenewOutcomes]string{"ok", "error", "lost"}

type lossReason int

const (
	lossEngine lossReason = iota
	lossRenewal
	lossDeadline
	lossMaxHold
	numLossReasons
)

var lossNames = [numLossReasons]string{"engine", "renewal", "deadline", "max_hold"}

// telemetry is a client's instruments, tracer and logger. The attribute
// sets are made once, so that recording allocates nothing of ours.
type telemetry struct {
	tracer trace.Tracer
	log    *slog.Logger // nil: silent
	driver attribute.KeyValue

	// What is known to discard everything, so that an unused telemetry
	// costs a comparison: an explicit no-op provider, or the global
	// provider while the program has not set one (unsetTP/unsetMP: the
	// global's placeholder, which OTel replaces in GetTracerProvider and
	// GetMeterProvider once a provider is set).
	noopTP, noopMP bool
	unsetTP        trace.TracerProvider
	unsetMP        metric.MeterProvider

	acquireDur, holdDur metric.Float64Histogram
	held, waiting       metric.Int64UpDownCounter
	renewals, losses    metric.Int64Counter

	// Option slices, passed with ... so that recording allocates none.
	prim    [numPrims][]metric.AddOption
	acquire [numPrims][numOutcomes][]metric.RecordOption
	ends    [numPrims][numEnds][]metric.RecordOption
	renew   [numPrims][numRenewOutcomes][]metric.AddOption
	loss    [numPrims][numLossReasons][]metric.AddOption
}

// driverName is the package of the driver's type ("etcdlock"), bounded
// and known without the URL.
func driverName(drv any) string {
	t := reflect.TypeOf(drv)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.PkgPath() == "" {
		return "unknown"
	}
	return path.Base(t.PkgPath())
}

func newTelemetry(cfg config, drv any) *telemetry {
	mp, tp := cfg.meterProvider, cfg.tracerProvider
	t := &telemetry{log: cfg.logger, driver: attribute.String("dlock.driver", driverName(drv))}
	if mp == nil {
		mp = otel.GetMeterProvider()
		if isGlobalPlaceholder(mp) {
			t.unsetMP = mp
		}
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
		if isGlobalPlaceholder(tp) {
			t.unsetTP = tp
		}
	}
	_, t.noopMP = mp.(noopmetric.MeterProvider)
	_, t.noopTP = tp.(nooptrace.TracerProvider)
	t.tracer = tp.Tracer(instrumentationName, trace.WithInstrumentationVersion(instrumentationVersion))
	m := mp.Meter(instrumentationName, metric.WithInstrumentationVersion(instrumentationVersion))
	// An instrument the provider refuses is left a no-op: metrics never
	// stop a lock from working.
	t.acquireDur, _ = m.Float64Histogram("dlock.acquire.duration", metric.WithUnit("s"),
		metric.WithDescription("Time an acquiring call (Lock, RLock, Acquire, Campaign, and their Try forms) took, by outcome."))
	t.holdDur, _ = m.Float64Histogram("dlock.hold.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a lease was held, from grant to its end (released, lost or closed)."))
	t.held, _ = m.Int64UpDownCounter("dlock.held", metric.WithUnit("{lock}"),
		metric.WithDescription("Leases held now."))
	t.waiting, _ = m.Int64UpDownCounter("dlock.waiting", metric.WithUnit("{lock}"),
		metric.WithDescription("Blocking acquiring calls waiting now."))
	t.renewals, _ = m.Int64Counter("dlock.renewal", metric.WithUnit("{renewal}"),
		metric.WithDescription("Renewals of held leases, by outcome."))
	t.losses, _ = m.Int64Counter("dlock.loss", metric.WithUnit("{loss}"),
		metric.WithDescription("Leases lost, by reason."))
	for p := range numPrims {
		base := []attribute.KeyValue{t.driver, attribute.String("dlock.primitive", primNames[p])}
		set := func(k, v string) metric.MeasurementOption {
			return metric.WithAttributeSet(attribute.NewSet(append(base[:2:2], attribute.String(k, v))...))
		}
		t.prim[p] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(base...))}
		for o := range numOutcomes {
			t.acquire[p][o] = []metric.RecordOption{set("dlock.outcome", outcomeNames[o])}
		}
		for e := range numEnds {
			t.ends[p][e] = []metric.RecordOption{set("dlock.end", endNames[e])}
		}
		for r := range numRenewOutcomes {
			t.renew[p][r] = []metric.AddOption{set("dlock.outcome", renewNames[r])}
		}
		for r := range numLossReasons {
			t.loss[p][r] = []metric.AddOption{set("dlock.reason", lossNames[r])}
		}
	}
	return t
}

// spanNames are the acquiring calls' span names, made once.
var spanNames = map[string]string{}

func init() {
	for _, op := range []string{"lock", "trylock", "rlock", "tryrlock", "acquire", "tryacquire", "campaign", "trycampaign"} {
		spanNames[op] = "dlock " + op
	}
}

var clientSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// acquireRec is one acquiring call being recorded.
type acquireRec struct {
	t       *telemetry // nil: nothing to record
	p       primitive
	wait    bool
	metered bool
	start   time.Time
	span    trace.Span // nil: not traced
}

// isGlobalPlaceholder reports whether p is OTel's global placeholder
// provider, the one the global getters return until a program sets its own.
func isGlobalPlaceholder(p any) bool {
	t := reflect.TypeOf(p)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global"
}

// tracing and metering report whether spans and metrics may go anywhere.
func (t *telemetry) tracing() bool {
	return !t.noopTP && (t.unsetTP == nil || otel.GetTracerProvider() != t.unsetTP)
}

func (t *telemetry) metering() bool {
	return !t.noopMP && (t.unsetMP == nil || otel.GetMeterProvider() != t.unsetMP)
}

// acquireStarted opens the call's span and counts a blocking call as
// waiting; the returned record's end records its end.
func (t *telemetry) acquireStarted(ctx context.Context, p primitive, op, name string, wait bool) (context.Context, acquireRec) {
	rec := acquireRec{p: p, wait: wait, metered: t.metering()}
	if t.tracing() {
		sn, ok := spanNames[op]
		if !ok {
			sn = "dlock " + op
		}
		ctx, rec.span = t.tracer.Start(ctx, sn, clientSpan...)
		if rec.span.IsRecording() {
			rec.span.SetAttributes(t.driver, attribute.String("dlock.primitive", primNames[p]),
				attribute.String("dlock.lock.name", name), attribute.Bool("dlock.wait", wait))
		}
	}
	if rec.metered {
		if wait {
			t.waiting.Add(ctx, 1, t.prim[p]...)
		}
		rec.start = time.Now()
	}
	if rec.metered || rec.span != nil {
		rec.t = t
	}
	return ctx, rec
}

func (r *acquireRec) end(out outcome, token uint64, err error) {
	t, bg := r.t, context.Background()
	if t == nil {
		return // nothing listens
	}
	if r.metered {
		if r.wait {
			t.waiting.Add(bg, -1, t.prim[r.p]...)
		}
		t.acquireDur.Record(bg, time.Since(r.start).Seconds(), t.acquire[r.p][out]...)
		if out == outAcquired {
			t.held.Add(bg, 1, t.prim[r.p]...)
		}
	}
	span := r.span
	if span == nil {
		return
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("dlock.outcome", outcomeNames[out]))
		if out == outAcquired {
			span.SetAttributes(attribute.Int64("dlock.token", int64(token)))
		}
		if out == outError {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	r.span.End()
}

// outcomeOf classifies an acquiring call's error.
func outcomeOf(err error, ctx context.Context) outcome {
	switch {
	case err == nil:
		return outAcquired
	case isNotAcquired(err):
		return outNotAcquired
	case ctx.Err() != nil:
		return outCanceled
	}
	return outError
}

func isNotAcquired(err error) bool { return errors.Is(err, ErrNotAcquired) }
