package safety

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlockio/dlock/driver"
	_ "github.com/dlockio/dlock/etcdlock" // etcd:// for workers
	_ "github.com/dlockio/dlock/filelock" // file:// for workers
	"github.com/dlockio/dlock/internal/lockname"
	"github.com/dlockio/dlock/internal/testserver"
	"github.com/dlockio/dlock/memlock"
	_ "github.com/dlockio/dlock/pglock" // postgres:// for workers
	"github.com/dlockio/dlock/redislock"
	_ "github.com/dlockio/dlock/zklock" // zk:// for workers
)

// engine is one driver on a fresh engine of its own, with the faults it
// allows.
type engine struct {
	name    string
	ttl     time.Duration
	expires bool // a silent holder's lock is freed after the TTL (so a pause lets a second holder in)
	// earlyLoss: the engine may end a lease before its time and tell the
	// holder (a PostgreSQL session that ends frees its locks), keeping the
	// lock from others until that time: checked with the early-loss models.
	earlyLoss bool
	url       string // for worker processes; "" when the engine lives in the test process

	newDriver func() (driver.Driver, error)
	drop      func(name string) // delete the lock whoever holds it; nil if unsupported

	servers []*testserver.Proc // dedicated servers, for stop/restart
	// net, when set, gives each server a network namespace of its own, so
	// that one can be cut off from the others; isLeader tells the leader.
	net      *testserver.Network
	noNet    error // why net is nil
	isLeader func(p *testserver.Proc) bool
	// victim picks the server to stop in the i-th restart (default: round
	// robin); after restarting it, settle waits until the engine serves again,
	// failing tb (the scenario's test, whose goroutine injects the faults).
	victim func(i int) *testserver.Proc
	settle func(tb testing.TB, p *testserver.Proc)
	// serverFault is held for each server-level fault (a restart, a cut),
	// from the fault until the engine serves again: the primitives run
	// their scenarios side by side on the same servers, and two runs'
	// faults at once would take down two servers of three, a fault no
	// scenario names (see injectIsolation), or restart one server twice at
	// once (one's Stop killed the process the other had just started,
	// whose Start then failed: TestRestartsOfSharedServersTakeTurns).
	serverFault sync.Mutex
	// urlFor, if set, makes a URL for the servers reached at hosts (each
	// worker's own proxies, in the order of servers).
	urlFor func(hosts []string) string
	// restart, if set, starts a killed server again (default: Start).
	restart func(p *testserver.Proc)
	// terminate, if set, ends the server sessions holding the lock name
	// (pg_terminate_backend); it returns how many it ended.
	terminate func(ctx context.Context, name string) (int, error)
}

// An engineMaker starts an engine for one scenario.
type engineMaker struct {
	name string
	make func(t *testing.T) *engine
}

var engines = []engineMaker{
	{"memlock", func(t *testing.T) *engine {
		e := memlock.NewEngine()
		return &engine{
			name: "memlock", ttl: time.Second, expires: true,
			newDriver: func() (driver.Driver, error) {
				c, err := e.NewClient()
				if err != nil {
					return nil, err
				}
				return c.Driver(), nil
			},
			drop: func(name string) { e.Drop(name) },
		}
	}},
	{"filelock", func(t *testing.T) *engine {
		dir := t.TempDir()
		url := "file://" + dir
		return &engine{
			name: "filelock", ttl: time.Second, url: url,
			newDriver: func() (driver.Driver, error) { return openDriver(context.Background(), url) },
			drop: func(string) {
				// Break the lock as an operator would: replace the file, so the
				// holder's flock stays on the old one.
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					p := filepath.Join(dir, e.Name())
					if b, err := os.ReadFile(p); err == nil && !strings.HasSuffix(p, ".tmp") {
						_ = os.WriteFile(p+".tmp", b, 0o600)
						_ = os.Rename(p+".tmp", p)
					}
				}
			},
		}
	}},
	{"redis", func(t *testing.T) *engine { return redisEngine(t, 1) }},
	{"redlock", func(t *testing.T) *engine { return redisEngine(t, 3) }},
	{"zookeeper", zkEngine},
	{"etcd", etcdEngine},
	{"postgres", pgEngine},
}

// etcdEngine starts a dedicated 3-member cluster. etcd raises lease TTLs to
// 1.5 election timeouts (1.5 s for the test cluster) and counts whole
// seconds, so the TTL is 2 s.
func etcdEngine(t *testing.T) *engine {
	const ttl = 2 * time.Second
	e := &engine{name: "etcd", ttl: ttl, expires: true}
	e.servers = testserver.StartEtcdCluster(t, 3, e.network(t)...)
	e.urlFor = func(hosts []string) string { return "etcd://" + strings.Join(hosts, ",") + "/safety" }
	e.isLeader = func(p *testserver.Proc) bool { return etcdIsLeader(p.Addr()) }
	e.victim = e.leaderOr
	e.settle = func(tb testing.TB, _ *testserver.Proc) { testserver.WaitEtcdHealthy(tb, e.servers...) }
	return e
}

func etcdIsLeader(addr string) bool {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return false
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, addr)
	return err == nil && st.Leader == st.Header.MemberId
}

// zkEngine starts a dedicated 3-server ensemble. The TTL is the session
// timeout (2 s; the servers' tickTime of 500 ms allows 1-10 s).
func zkEngine(t *testing.T) *engine {
	const ttl = 2 * time.Second
	e := &engine{name: "zookeeper", ttl: ttl, expires: true}
	e.servers = testserver.StartZooKeeper(t, 3, e.network(t)...)
	e.urlFor = func(hosts []string) string {
		return "zk://" + strings.Join(hosts, ",") + "/safety?session_timeout=" + ttl.String()
	}
	e.isLeader = func(p *testserver.Proc) bool { return testserver.ZooKeeperMode(p.Addr()) == "leader" }
	e.victim = e.leaderOr
	e.settle = func(tb testing.TB, _ *testserver.Proc) { testserver.WaitZooKeeperServing(tb, e.servers...) }
	return e
}

// network puts the engine's servers in network namespaces of their own
// where this machine allows it (root, iproute2); elsewhere they share the
// test's loopback and the scenarios that cut servers apart cannot run.
func (e *engine) network(t *testing.T) []testserver.Option {
	if err := testserver.NetworkSupport(); err != nil {
		e.noNet = err
		return nil
	}
	e.net = testserver.NewNetwork(t)
	return []testserver.Option{testserver.OnNetwork(e.net)}
}

// leaderOr returns the current leader, or the i-th server if there is none.
func (e *engine) leaderOr(i int) *testserver.Proc {
	for _, p := range e.servers {
		if e.isLeader(p) {
			return p
		}
	}
	return e.servers[i%len(e.servers)]
}

// redisEngine starts n dedicated Redis servers (AOF, fsync always, so a
// restarted node keeps its keys and fence counters) behind proxies.
func redisEngine(t *testing.T, n int) *engine {
	e := &engine{name: "redis", ttl: time.Second, expires: true}
	for range n {
		e.servers = append(e.servers, testserver.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always"))
	}
	e.urlFor = func(hosts []string) string { return "redis://" + hosts[0] + "/0" }
	if n > 1 {
		e.name = "redlock"
		e.urlFor = func(hosts []string) string { return "redlock://" + strings.Join(hosts, ",") }
	}
	e.drop = func(name string) {
		for _, p := range e.servers {
			c := redis.NewClient(&redis.Options{Addr: p.Addr()})
			_ = c.Del(context.Background(), redislock.DefaultPrefix+"{"+lockname.Escape(name, 0)+"}").Err()
			c.Close()
		}
	}
	return e
}
