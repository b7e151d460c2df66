package main

import (
	"strings"
	"testing"

	"github.com/dlockio/dlock/internal/testserver"
)

// TestE2EPostgresCounter: 30 dlock run processes on postgres:// increment
// a counter file under the lock: exact, tokens in order.
func TestE2EPostgresCounter(t *testing.T) {
	backend := testserver.Postgres(t)
	dlockBinary(t)
	runCounterProcs(t, backend, "e2e-counter-"+randomID(), 30)
}

// TestE2ESharedOnPostgres: dlock run --shared readers and writers on
// postgres:// as separate processes.
func TestE2ESharedOnPostgres(t *testing.T) {
	e2eShared(t, testserver.Postgres(t), "catalog-"+randomID())
}

// TestDemoOnPostgres: dlock demo keeps its counter in PostgreSQL, on the
// driver's own pool.
func TestDemoOnPostgres(t *testing.T) {
	r := run(t.Context(), "demo", "--backend", testserver.Postgres(t), "--workers", "4", "--increments", "25")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stdout, "counter        100 (want 100): exact") {
		t.Fatalf("demo on postgres: %v", r)
	}
}
