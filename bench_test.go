package dlock_test

import (
	"context"
	"testing"

	"github.com/dlockio/dlock/memlock"
)

// BenchmarkLockUnlock: the portable layer's own cost of one uncontended
// Lock+Unlock, on the in-process engine (no network in the way).
func BenchmarkLockUnlock(b *testing.B) {
	c, err := memlock.New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	m := c.Mutex("bench")
	b.ReportAllocs()
	for b.Loop() {
		l, err := m.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
