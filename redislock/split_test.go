package redislock

import (
	"context"
	"testing"
	"time"

	"github.com/dlockio/dlock/driver"
)

// BenchmarkCostSplit tells where an uncontended cycle's time goes: the raw
// floor, the two Lua scripts alone, and the driver without the portable
// layer (compare with BenchmarkUncontended/redislock).
func BenchmarkCostSplit(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	rdb := benchClient(b, addr)
	b.Run("floor", func(b *testing.B) {
		for b.Loop() {
			rdb.SetNX(ctx, "s1", "x", 15*time.Second)
			rdb.Del(ctx, "s1")
		}
	})
	k := (&Driver{prefix: DefaultPrefix}).keysOf("s2")
	b.Run("scripts", func(b *testing.B) {
		for b.Loop() {
			acquireScript.Run(ctx, rdb, k.single(), "o", 15000, "")
			releaseScript.Run(ctx, rdb, k.single(), "o", k.channel, 15000, 0)
		}
	})
	d, _ := NewDriver(rdb, nil)
	defer d.Close()
	b.Run("driver", func(b *testing.B) {
		for b.Loop() {
			l, _, _ := d.Acquire(ctx, driver.Request{Name: "s3", TTL: 15 * time.Second})
			l.Release(ctx)
		}
	})
}
