package redislock

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
)

// BenchmarkUncontendedDriver: the driver alone (no lease, no watchdog), to
// tell the cost of the scripts from the portable layer's.
func BenchmarkUncontendedDriver(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	d, err := NewDriver([]redis.UniversalClient{benchClient(b, addr)}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.ReportAllocs()
	for b.Loop() {
		l, _, err := d.Acquire(ctx, driver.Request{Name: "bench-driver", TTL: 15 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
