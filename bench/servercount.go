package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// ServerCount reads how many requests the engine's servers have handled so
// far, from their own counters: it sees what the client library sends on
// our behalf (Lua internals, keep-alives, pings) that a client-side count
// would miss, and also what other users of a shared server send.
type ServerCount struct {
	What string // what is counted, for the report
	Read func(ctx context.Context) (int64, error)
	// Settle is how long the count may lag the requests it counts:
	// Scale waits this long before each window, so that the requests of
	// what came before (the floor, the grants) are not counted in it.
	Settle time.Duration
}

// RedisCommandCalls sums the calls of every command in INFO commandstats
// over nodes (commands run inside Lua scripts are counted there too).
func RedisCommandCalls(nodes ...*redis.Client) ServerCount {
	return ServerCount{What: "INFO commandstats calls (Lua internals included)", Read: func(ctx context.Context) (int64, error) {
		var sum int64
		for _, c := range nodes {
			info, err := c.Info(ctx, "commandstats").Result()
			if err != nil {
				return 0, err
			}
			for _, l := range strings.Split(info, "\n") {
				_, rest, ok := strings.Cut(l, "calls=")
				if !ok {
					continue
				}
				v, _, _ := strings.Cut(rest, ",")
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("commandstats %q: %w", l, err)
				}
				sum += n
			}
		}
		return sum, nil
	}}
}

// EtcdGRPCReceived sums grpc_server_msg_received_total (unary requests and
// every message on streams: lease keep-alives, watch requests) over the
// members' /metrics.
func EtcdGRPCReceived(endpoints []string) ServerCount {
	hc := &http.Client{Timeout: 5 * time.Second}
	return ServerCount{What: "grpc_server_msg_received_total, all members", Read: func(ctx context.Context) (int64, error) {
		var sum int64
		for _, ep := range endpoints {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ep+"/metrics", nil)
			if err != nil {
				return 0, err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return 0, err
			}
			n, err := sumMetric(resp.Body, "grpc_server_msg_received_total")
			resp.Body.Close()
			if err != nil {
				return 0, fmt.Errorf("%s/metrics: %w", ep, err)
			}
			sum += n
		}
		return sum, nil
	}}
}

func sumMetric(r io.Reader, name string) (int64, error) {
	var sum float64
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		l := s.Text()
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", l, err)
		}
		sum += v
	}
	return int64(sum), s.Err()
}

// ZKPacketsReceived sums zk_packets_received of mntr over servers (every
// request and ping a client sends is one packet).
func ZKPacketsReceived(servers []string) ServerCount {
	return ServerCount{What: "mntr zk_packets_received, all servers", Read: func(ctx context.Context) (int64, error) {
		var sum int64
		for _, s := range servers {
			out, err := fourLetter(s, "mntr")
			if err != nil {
				return 0, err
			}
			found := false
			for _, l := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(l, "zk_packets_received"); ok {
					n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					if err != nil {
						return 0, fmt.Errorf("%s mntr %q: %w", s, l, err)
					}
					sum, found = sum+n, true
				}
			}
			if !found {
				return 0, fmt.Errorf("%s: mntr has no zk_packets_received (is mntr whitelisted?)", s)
			}
		}
		return sum, nil
	}}
}

func fourLetter(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// PGTransactions sums xact_commit + xact_rollback of the database in
// pg_stat_database: every statement outside an explicit transaction is one.
// The server publishes these counts late: a backend flushes its statistics
// when it goes idle, at most once a second, and one that went idle within
// that second only after PGSTAT_IDLE_INTERVAL (10 s) unless it runs another
// statement first. Counted right after 10,000 grants, the window took in
// the grants' transactions (3,868-11,320 "requests" per renewal interval,
// where pg_stat_statements counted 27-37 renewal statements): hence Settle.
func PGTransactions(pool *pgxpool.Pool) ServerCount {
	return ServerCount{What: "pg_stat_database xact_commit + xact_rollback (after 11 s for the server's late flush)", Settle: 11 * time.Second, Read: func(ctx context.Context) (int64, error) {
		var n int64
		err := pool.QueryRow(ctx, `SELECT xact_commit + xact_rollback
			FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
		return n, err
	}}
}

// pgSent counts the statements this process sends to PostgreSQL through
// connections made with connectPG's configuration (pgSentTracer): the
// scale scenario's client-side count, blind to other users of the shared
// server, which the server's count is not.
var pgSent atomic.Int64

type pgSentTracer struct{}

func (pgSentTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	pgSent.Add(1)
	return ctx
}

func (pgSentTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
