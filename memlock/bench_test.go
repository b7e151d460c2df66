package memlock

import (
	"testing"

	"github.com/dlockio/dlock/drivertest"
)

// The in-process engine has no floor and no peer: only dlock's scenarios.
//
//	go test -run '^$' -bench . -benchmem ./memlock
func BenchmarkDriver(b *testing.B) {
	drivertest.RunBenchmarks(b, harness{NewEngine()})
}
