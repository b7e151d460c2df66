package dlock_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dlockio/dlock"
)

// A Prometheus scrape of dlock's metrics, through the OpenTelemetry
// Prometheus exporter.
func ExampleWithMeterProvider() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		panic(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(ctx)

	c, err := dlock.Open(ctx, "mem://metrics", dlock.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	l, _ := c.Mutex("reports").Lock(ctx)
	l.Unlock(ctx)

	// In a service: http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		l := lines.Text()
		if strings.HasPrefix(l, "dlock_") && !strings.Contains(l, "_bucket") && !strings.Contains(l, "_sum") {
			fmt.Println(l)
		}
	}
	// Output:
	// dlock_acquire_duration_seconds_count{dlock_driver="memlock",dlock_outcome="acquired",dlock_primitive="mutex"} 1
	// dlock_held{dlock_driver="memlock",dlock_primitive="mutex"} 0
	// dlock_hold_duration_seconds_count{dlock_driver="memlock",dlock_end="released",dlock_primitive="mutex"} 1
	// dlock_waiting{dlock_driver="memlock",dlock_primitive="mutex"} 0
}
