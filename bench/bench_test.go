package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/memlock"
)

func TestSumMetric(t *testing.T) {
	in := `# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
grpc_server_msg_received_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 2
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 1.5e+06
grpc_server_msg_received_total_other 7
`
	n, err := sumMetric(strings.NewReader(in), "grpc_server_msg_received_total")
	if err != nil || n != 1500002 {
		t.Fatalf("sumMetric = %d, %v; want 1500002", n, err)
	}
}

func memTarget() Target { return Target{Name: "dlock-mem", Family: "mem", Open: memlock.New} }

func TestScaleMem(t *testing.T) {
	cfg := ScaleConfig{N: 300, G: 8, TTL: time.Second, Renew: 300 * time.Millisecond, Window: 300 * time.Millisecond}
	m, err := Scale(context.Background(), memTarget(), "t", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m[MScaleN] != 300 || m[MGrantsPerSec] <= 0 || m[MReleaseMs] <= 0 || m[MLostHolding] != 0 {
		t.Fatalf("metrics %v", m)
	}
	if _, ok := m[MReqPerRenew]; ok {
		t.Fatalf("mem has no server to count, got %v", m)
	}
}

func TestPrimitivesMem(t *testing.T) {
	cfg := PrimConfig{Readers: 4, Permits: 2, Workers: 6, Budget: scenario.Budget{N: 200, Max: 200 * time.Millisecond},
		Writer: time.Millisecond, Hold: 200 * time.Microsecond}
	m, err := RW(context.Background(), memTarget(), "rw", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m[MReadPerSec] <= 0 || m[MMutexPerSec] <= 0 || m[MMaxReaderWrite] != 0 || m[MWriterN] == 0 {
		t.Fatalf("rw metrics %v", m)
	}
	m, err = Semaphore(context.Background(), memTarget(), "sem", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m[MPermitPerSec] <= 0 || m[MOverPermit] != 0 || m[MMaxInUse] < 1 || m[MMaxInUse] > 2 {
		t.Fatalf("semaphore metrics %v", m)
	}
}
