package redislock

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/internal/scenario"
)

// BenchmarkCycleCPU tells what one uncontended Lock+Unlock costs in CPU on
// each side of the socket, against the floor (SET NX PX + DEL), on a 2-core
// box where client and server share the CPUs and every microsecond of
// either is one the other cannot have:
//
//   - client-µs: the test process's user+system CPU (getrusage: every
//     goroutine, GC included, and the kernel's share of the loopback
//     writes, which run the server's receive path);
//   - server-µs: redis-server's (INFO cpu);
//   - wall-µs: the median cycle;
//   - client-csw: the test process's context switches (each a thread that
//     went to sleep or was woken: a goroutine handed to another thread, a
//     timer that woke the netpoller).
//
// The two sides alternate in blocks of 200 cycles, so that a load spike
// hits both. It then counts, on the same dedicated server, the commands one
// dlock cycle makes the server run (INFO commandstats; a script's inner
// commands count) and logs them by name: a cycle must be exactly two
// EVALSHAs and their inner commands, with no SUBSCRIBE, TIME, SCRIPT or
// NOSCRIPT re-send.
func BenchmarkCycleCPU(b *testing.B) {
	addr := benchServer(b)
	ctx := context.Background()
	admin := benchClient(b, addr)
	fl := floor(benchClient(b, addr))
	c, err := New(benchClient(b, addr), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ours := scenario.Client(c)
	sides := []struct {
		name string
		l    scenario.Locker
		key  string
		cpu  [2]time.Duration // client, server
		csw  int64            // the client's context switches
		wall []time.Duration
		n    int
	}{{name: "floor", l: fl, key: "cpu-floor"}, {name: "dlock", l: ours, key: "cpu-dlock"}}
	for i := range sides { // the scripts loaded, the pool's connection made
		if err := scenario.Cycle(ctx, sides[i].l, sides[i].key); err != nil {
			b.Fatal(err)
		}
	}
	const block = 200
	for b.Loop() {
		for i := range sides {
			s := &sides[i]
			srv0 := serverCPU(b, admin)
			cl0, sw0 := processCPU(b)
			for range block {
				t := time.Now()
				if err := scenario.Cycle(ctx, s.l, s.key); err != nil {
					b.Fatal(err)
				}
				s.wall = append(s.wall, time.Since(t))
			}
			cl1, sw1 := processCPU(b)
			srv1 := serverCPU(b, admin)
			s.cpu[0] += cl1 - cl0
			s.cpu[1] += srv1 - srv0
			s.csw += sw1 - sw0
			s.n += block
		}
	}
	for _, s := range sides {
		b.ReportMetric(float64(s.cpu[0].Nanoseconds())/1e3/float64(s.n), s.name+"-client-µs")
		b.ReportMetric(float64(s.cpu[1].Nanoseconds())/1e3/float64(s.n), s.name+"-server-µs")
		b.ReportMetric(float64(scenario.Median(s.wall).Nanoseconds())/1e3, s.name+"-wall-µs")
		b.ReportMetric(float64(s.csw)/float64(s.n), s.name+"-client-csw")
	}
	b.ReportMetric(0, "ns/op")

	// Commands per dlock cycle, by name.
	const n = 1000
	before := commandStats(b, admin)
	for range n {
		if err := scenario.Cycle(ctx, ours, "cpu-dlock"); err != nil {
			b.Fatal(err)
		}
	}
	after := commandStats(b, admin)
	var per []string
	total := 0.0
	for name, calls := range after {
		d := calls - before[name]
		if name == "info" {
			d-- // the INFO that asked
		}
		if d != 0 {
			per = append(per, fmt.Sprintf("%s %.2f", name, float64(d)/n))
			total += float64(d) / n
		}
	}
	slices.Sort(per)
	b.ReportMetric(total, "server-cmds/cycle")
	b.Logf("server commands per dlock cycle (%d cycles): %s", n, strings.Join(per, ", "))
}

// rusage is this process's resource usage so far.
func rusage(b *testing.B) syscall.Rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru
}

// processCPU is this process's user+system CPU time so far, and its
// context switches (voluntary or not).
func processCPU(b *testing.B) (time.Duration, int64) {
	ru := rusage(b)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw + ru.Nivcsw
}

// serverCPU is the server's user+system CPU time so far (INFO cpu).
func serverCPU(b *testing.B, admin *redis.Client) time.Duration {
	s, err := admin.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sec float64
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu: %q: %v", line, err)
			}
			sec += f
		}
	}
	return time.Duration(sec * 1e9)
}

// cmdStat is one command's line of INFO commandstats.
type cmdStat struct {
	calls int64
	usec  float64
}

// cmdStats is the server's INFO commandstats by command
// (cmdstat_NAME:calls=N,usec=U,...).
func cmdStats(b *testing.B, admin *redis.Client) map[string]cmdStat {
	s, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]cmdStat{}
	for _, line := range strings.Split(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(rest, "calls=") {
			continue
		}
		var st cmdStat
		for _, f := range strings.Split(rest, ",") {
			var err error
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				st.calls, err = strconv.ParseInt(v, 10, 64)
			} else if v, ok := strings.CutPrefix(f, "usec="); ok {
				st.usec, err = strconv.ParseFloat(v, 64)
			}
			if err != nil {
				b.Fatalf("INFO commandstats: %q: %v", line, err)
			}
		}
		m[name] = st
	}
	return m
}

// commandStats is the server's count of calls by command.
func commandStats(b *testing.B, admin *redis.Client) map[string]int64 {
	m := map[string]int64{}
	for name, st := range cmdStats(b, admin) {
		m[name] = st.calls
	}
	return m
}
