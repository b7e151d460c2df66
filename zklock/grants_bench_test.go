package zklock

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// BenchmarkScaleGrants is the grant half of the peer benchmark's scale
// scenario (bench/scale.go): 64 goroutines on one Dial client (TTL 6 s)
// take 2,000 distinct names with Mutex.Lock, each a queue no one else
// uses. In the same iteration, before it, the floor: 64 goroutines
// creating an ephemeral node each on one shared session. It reports both
// rates, their ratio, and the requests the client sent per grant, by
// operation (counted on the wire: go-zookeeper writes one request per
// Write).
//
//	go test -run '^$' -bench ScaleGrants -benchtime 3x ./zklock
func BenchmarkScaleGrants(b *testing.B) {
	const n, workers, ttl = 2000, 64, 6 * time.Second
	servers := testserver.ZooKeeper(b)
	ctx := context.Background()
	floorConn, _ := benchConn(b, servers)
	var ops opCounter
	c, err := Dial(ctx, servers, &Options{Prefix: testRoot, Dialer: ops.dial}, dlock.WithTTL(ttl))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	warm, err := c.Mutex("bench/scale-grants/warm").Lock(ctx)
	if err != nil {
		b.Fatal(err)
	}
	warm.Unlock(ctx)
	var floors, grants []float64
	for b.Loop() {
		run := "bench/scale-grants/" + newGUID()[:8]
		floorRoot := testRoot + "/floor-" + newGUID()[:8]
		if _, err := floorConn.Create(floorRoot, nil, 0, worldACL); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		parallel(b, n, workers, func(i int) error {
			_, err := floorConn.Create(fmt.Sprintf("%s/%d", floorRoot, i), nil, zk.FlagEphemeral, worldACL)
			return err
		})
		floors = append(floors, n/time.Since(start).Seconds())
		parallel(b, n, workers, func(i int) error { return floorConn.Delete(fmt.Sprintf("%s/%d", floorRoot, i), -1) })
		floorConn.Delete(floorRoot, -1)

		leases := make([]*dlock.Lease, n)
		ops.reset()
		start = time.Now()
		parallel(b, n, workers, func(i int) error {
			l, err := c.Mutex(fmt.Sprintf("%s/%d", run, i)).Lock(ctx)
			leases[i] = l
			return err
		})
		grants = append(grants, n/time.Since(start).Seconds())
		sent := ops.snapshot()
		parallel(b, n, workers, func(i int) error { return leases[i].Unlock(ctx) })
		if b.N == 1 || len(grants) == 1 {
			b.Logf("requests per grant: %s", sent.per(n))
		}
		for op, k := range sent {
			b.ReportMetric(float64(k)/n, op+"/grant")
		}
	}
	sort.Float64s(floors)
	sort.Float64s(grants)
	fl, gr := floors[len(floors)/2], grants[len(grants)/2]
	b.ReportMetric(fl, "floor-grants/s")
	b.ReportMetric(gr, "grants/s")
	b.ReportMetric(gr/fl, "x-floor")
}

// opCounter counts the requests written on the connections it dials, by
// ZooKeeper operation.
type opCounter struct {
	mu     sync.Mutex
	counts map[string]int64
}

func (o *opCounter) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, o: o}, nil
}

func (o *opCounter) reset() {
	o.mu.Lock()
	o.counts = map[string]int64{}
	o.mu.Unlock()
}

func (o *opCounter) snapshot() opCounts {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := opCounts{}
	for k, v := range o.counts {
		s[k] = v
	}
	return s
}

type opCounts map[string]int64

func (s opCounts) per(n int) string {
	var parts []string
	var sum int64
	for k, v := range s {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(v)/float64(n)))
		sum += v
	}
	sort.Strings(parts)
	return fmt.Sprintf("%.2f: %s", float64(sum)/float64(n), strings.Join(parts, ", "))
}

var opNames = map[int32]string{
	1: "create", 2: "delete", 3: "exists", 4: "getData", 5: "setData", 8: "getChildren",
	9: "sync", 11: "ping", 12: "getChildren2", 13: "check", 14: "multi", 19: "createContainer",
	101: "setWatches", 100: "auth",
}

type countingConn struct {
	net.Conn
	o     *opCounter
	first atomic.Bool // the connect request has no header
}

func (c *countingConn) Write(p []byte) (int, error) {
	if c.first.CompareAndSwap(false, true) || len(p) < 12 {
		return c.Conn.Write(p)
	}
	name, ok := opNames[int32(binary.BigEndian.Uint32(p[8:12]))]
	if !ok {
		name = "other"
	}
	c.o.mu.Lock()
	if c.o.counts != nil {
		c.o.counts[name]++
	}
	c.o.mu.Unlock()
	return c.Conn.Write(p)
}
