// Command etcdprobe runs the shared counter on etcd (dlock-etcd against
// concurrency.Mutex, alternated) and counts where an increment goes: the
// requests this process sends by kind, the watch events it receives, the
// server's committed proposals and watch events sent (its /metrics), the
// client's and the server's CPU, and the handoff (release call to the next
// holder's grant).
//
//	go run ./cmd/etcdprobe -single -w 10,50 -pairs 5
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dlockio/dlock/etcdlock"
	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
)

type counts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *counts) add(k string, n int64) {
	c.mu.Lock()
	c.m[k] += n
	c.mu.Unlock()
}

func (c *counts) snap() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

type recvStream struct {
	grpc.ClientStream
	c      *counts
	method string
}

func (s recvStream) SendMsg(m any) error {
	s.c.add("send "+s.method, 1)
	return s.ClientStream.SendMsg(m)
}

func (s recvStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.c.add("recv "+s.method, 1)
		if wr, ok := m.(*pb.WatchResponse); ok {
			s.c.add("watch events recv", int64(len(wr.Events)))
			if wr.Created {
				s.c.add("watch created", 1)
			}
		}
	}
	return err
}

func short(method string) string { return method[strings.LastIndex(method, "/")+1:] }

func newClient(eps []string, c *counts) (*clientv3.Client, error) {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		k := short(method)
		if t, ok := req.(*pb.TxnRequest); ok {
			if len(t.Compare) == 0 && len(t.Failure) == 0 && readOnly(t.Success) {
				k = "Txn(read)"
			} else {
				k = "Txn(write)"
			}
		}
		if r, ok := req.(*pb.RangeRequest); ok && !r.Serializable {
			k = "Range"
		}
		c.add(k, 1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return recvStream{s, c, short(method)}, nil
	}
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}})
}

func readOnly(ops []*pb.RequestOp) bool {
	for _, op := range ops {
		if op.GetRequestRange() == nil {
			return false
		}
	}
	return true
}

// scrape sums the metrics of interest over the members.
func scrape(eps []string) map[string]float64 {
	out := map[string]float64{}
	for _, ep := range eps {
		resp, err := http.Get("http://" + ep + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "#") {
				continue
			}
			sp := strings.LastIndexByte(line, ' ')
			if sp < 0 {
				continue
			}
			name, val := line[:sp], line[sp+1:]
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				continue
			}
			switch {
			case name == "etcd_server_proposals_committed_total",
				name == "etcd_debugging_mvcc_events_total",
				name == "etcd_disk_wal_fsync_duration_seconds_count",
				name == "etcd_server_read_indexes_failed_total",
				strings.HasPrefix(name, "etcd_network_peer_sent_bytes_total"):
				key := name
				if i := strings.IndexByte(name, '{'); i > 0 {
					key = name[:i]
				}
				out[key] += v
			case strings.HasPrefix(name, "grpc_server_handled_total{"):
				m := label(name, "grpc_method")
				out["srv "+m] += v
			case strings.HasPrefix(name, "grpc_server_msg_sent_total{"):
				out["srv sent "+label(name, "grpc_method")] += v
			case name == "process_cpu_seconds_total":
				out["server cpu s"] += v
			}
		}
		resp.Body.Close()
	}
	return out
}

func label(name, l string) string {
	i := strings.Index(name, l+"=\"")
	if i < 0 {
		return "?"
	}
	s := name[i+len(l)+2:]
	return s[:strings.IndexByte(s, '"')]
}

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type result struct {
	name     string
	w        int
	inc      float64
	n        int
	client   map[string]int64
	server   map[string]float64
	cpu      time.Duration
	handoffs []time.Duration
	holds    []time.Duration
	unlocks  []time.Duration
}

func run(ctx context.Context, eps []string, contender string, w, k int) (*result, error) {
	c := &counts{m: map[string]int64{}}
	cli, err := newClient(eps, c)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ls := make([]scenario.Locker, w)
	for i := range ls {
		switch contender {
		case "dlock-etcd":
			dc, err := etcdlock.New(cli, nil)
			if err != nil {
				return nil, err
			}
			ls[i] = scenario.Client(dc)
		case "etcd-mutex":
			s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
			if err != nil {
				return nil, err
			}
			ls[i] = scenario.LockerFunc{LockFunc: func(ctx context.Context, name string) (scenario.Held, error) {
				m := concurrency.NewMutex(s, name)
				if err := m.Lock(ctx); err != nil {
					return scenario.Held{}, err
				}
				return scenario.Held{Unlock: m.Unlock, Token: uint64(m.Header().Revision)}, nil
			}, CloseFunc: s.Close}
		}
	}
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	name := fmt.Sprintf("probe-%s-w%d-%d", contender, w, time.Now().UnixNano())
	s0, c0, t0 := scrape(eps), c.snap(), cpu()
	r, err := scenario.SharedCounter(ctx, ls, []scenario.Counter{engines.Etcd(cli)}, scenario.CounterConfig{
		Name: name, Key: name, Increments: k, Max: 60 * time.Second})
	if err != nil {
		return nil, err
	}
	t1, c1, s1 := cpu(), c.snap(), scrape(eps)
	if r.Final != r.Want {
		return nil, fmt.Errorf("%s: counter %d, want %d", contender, r.Final, r.Want)
	}
	res := &result{name: contender, w: w, inc: r.PerSec(), n: int(r.Done()), client: map[string]int64{}, server: map[string]float64{}, cpu: t1 - t0}
	for k, v := range c1 {
		res.client[k] = v - c0[k]
	}
	for k, v := range s1 {
		res.server[k] = v - s0[k]
	}
	gs := slices.Clone(r.Grants)
	slices.SortFunc(gs, func(a, b scenario.Grant) int { return a.Granted.Compare(b.Granted) })
	for i, g := range gs {
		res.holds = append(res.holds, g.Releasing.Sub(g.Granted))
		res.unlocks = append(res.unlocks, g.Released.Sub(g.Releasing))
		if i > 0 {
			res.handoffs = append(res.handoffs, g.Granted.Sub(gs[i-1].Releasing))
		}
	}
	return res, nil
}

func pct(ds []time.Duration, p float64) string {
	return fmt.Sprintf("%.2f", scenario.Ms(scenario.Percentile(ds, p)))
}

func (r *result) print() {
	n := float64(r.n)
	fmt.Printf("%-11s W=%-2d inc/s %6.1f  n=%d  client cpu/inc %.2f ms  server cpu/inc %.2f ms\n", r.name, r.w, r.inc, r.n,
		scenario.Ms(r.cpu)/n, r.server["server cpu s"]*1000/n)
	fmt.Printf("   handoff ms p50 %s p90 %s p99 %s | hold p50 %s | unlock p50 %s\n", pct(r.handoffs, .5), pct(r.handoffs, .9), pct(r.handoffs, .99), pct(r.holds, .5), pct(r.unlocks, .5))
	ks := slices.Sorted(func(yield func(string) bool) {
		for k := range r.client {
			if !yield(k) {
				return
			}
		}
	})
	var b strings.Builder
	for _, k := range ks {
		if r.client[k] != 0 {
			fmt.Fprintf(&b, " %s=%.2f", k, float64(r.client[k])/n)
		}
	}
	fmt.Printf("   client per inc:%s\n", b.String())
	b.Reset()
	ks = ks[:0]
	for k := range r.server {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		if r.server[k] != 0 && k != "server cpu s" {
			fmt.Fprintf(&b, " %s=%.2f", k, r.server[k]/n)
		}
	}
	fmt.Printf("   server per inc:%s\n", b.String())
}

func main() {
	single := flag.Bool("single", false, "start a single etcd node at its defaults")
	ws := flag.String("w", "10,50", "workers")
	k := flag.Int("k", 100, "increments per worker")
	pairs := flag.Int("pairs", 3, "alternated pairs")
	only := flag.String("contenders", "dlock-etcd,etcd-mutex", "")
	flag.Parse()
	ctx := context.Background()
	eps := strings.Split(os.Getenv("DLOCK_TEST_ETCD"), ",")
	if *single {
		dir, _ := os.MkdirTemp("", "etcdprobe")
		defer os.RemoveAll(dir)
		port := 23000 + os.Getpid()%1000
		ep := fmt.Sprintf("127.0.0.1:%d", port)
		peer := fmt.Sprintf("http://127.0.0.1:%d", port+1000)
		cmd := exec.Command(os.Getenv("DLOCK_ETCD_BIN"), "--data-dir", filepath.Join(dir, "etcd"),
			"--listen-client-urls", "http://"+ep, "--advertise-client-urls", "http://"+ep,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "default="+peer, "--log-level", "warn")
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		eps = []string{ep}
		for range 100 {
			if _, err := http.Get("http://" + ep + "/health"); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var wl []int
	for _, s := range strings.Split(*ws, ",") {
		n, _ := strconv.Atoi(s)
		wl = append(wl, n)
	}
	cs := strings.Split(*only, ",")
	for p := range *pairs {
		for _, w := range wl {
			order := slices.Clone(cs)
			if p%2 == 1 {
				slices.Reverse(order)
			}
			for _, c := range order {
				r, err := run(ctx, eps, c, w, *k)
				if err != nil {
					fmt.Println("error:", err)
					continue
				}
				r.print()
			}
		}
	}
}
