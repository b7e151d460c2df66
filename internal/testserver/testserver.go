// Package testserver gives tests real Redis, etcd, ZooKeeper and PostgreSQL
// servers.
//
// Two kinds of servers are offered:
//
//   - Shared servers, started once per machine by `scripts/services.sh up`
//     (5 Redis nodes, a 3-member etcd cluster, a 3-server ZooKeeper
//     ensemble and a PostgreSQL cluster, on fixed loopback ports). [Redis],
//     [Etcd] and [ZooKeeper] return their addresses, [Postgres] its URL.
//     Tests must not stop or break them and should use unique
//     keys/paths/names, since other packages run against them in parallel.
//   - Dedicated processes for fault tests: [StartRedis],
//     [StartEtcdCluster], [StartZooKeeper] and [StartPostgres] start fresh
//     servers on free loopback ports; the returned [*Proc] values can be
//     stopped, killed, paused and restarted. They are stopped when the test
//     ends.
//   - A [Network] of network namespaces, for partitions between servers:
//     with [OnNetwork], StartEtcdCluster and StartZooKeeper give each server
//     a namespace of its own, and the Network can cut one off from the
//     other servers, or from its clients, and heal it (netns.go; needs root
//     and iproute2).
//
// When a server or binary is missing the helpers skip the test, or fail it
// when the environment variable CI is "true".
package testserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables read by this package. Values not set in the
// environment are looked up in $DLOCK_SERVICES_DIR/env (written by
// scripts/services.sh up), then fall back to the defaults below.
const (
	EnvRedis       = "DLOCK_TEST_REDIS"    // comma-separated host:port list
	EnvEtcd        = "DLOCK_TEST_ETCD"     // comma-separated host:port list (client URLs)
	EnvZooKeeper   = "DLOCK_TEST_ZK"       // comma-separated host:port list
	EnvRedisBin    = "DLOCK_REDIS_BIN"     // path of redis-server
	EnvEtcdBin     = "DLOCK_ETCD_BIN"      // path of etcd
	EnvZKClasspath = "DLOCK_ZK_CLASSPATH"  // Java classpath of the ZooKeeper server
	EnvJava        = "JAVA"                // path of java
	EnvServicesDir = "DLOCK_SERVICES_DIR"  // state dir of scripts/services.sh
	defaultDir     = "/tmp/dlock-services" // default of DLOCK_SERVICES_DIR
)

// Default addresses of the shared servers (see scripts/services.sh).
var (
	DefaultRedis     = []string{"127.0.0.1:16371", "127.0.0.1:16372", "127.0.0.1:16373", "127.0.0.1:16374", "127.0.0.1:16375"}
	DefaultEtcd      = []string{"127.0.0.1:12379", "127.0.0.1:12479", "127.0.0.1:12579"}
	DefaultZooKeeper = []string{"127.0.0.1:12181", "127.0.0.1:12182", "127.0.0.1:12183"}
)

const hint = "run `scripts/services.sh up` (or `make services-up`)"

const dialTimeout = 500 * time.Millisecond

// Redis returns the addresses of the shared Redis nodes after checking that
// each answers PING.
func Redis(tb testing.TB) []string {
	tb.Helper()
	addrs := addrList(EnvRedis, DefaultRedis)
	for _, a := range addrs {
		if err := redisPing(a, dialTimeout); err != nil {
			unavailable(tb, "shared Redis %s is not answering (%v); %s", a, err, hint)
		}
	}
	return addrs
}

// Etcd returns the client addresses (host:port) of the shared etcd cluster
// after checking that each member accepts connections.
func Etcd(tb testing.TB) []string {
	tb.Helper()
	addrs := addrList(EnvEtcd, DefaultEtcd)
	for _, a := range addrs {
		if err := dial(a, dialTimeout); err != nil {
			unavailable(tb, "shared etcd %s is not answering (%v); %s", a, err, hint)
		}
	}
	return addrs
}

// ZooKeeper returns the client addresses of the shared ZooKeeper ensemble
// after checking that each server accepts connections.
func ZooKeeper(tb testing.TB) []string {
	tb.Helper()
	addrs := addrList(EnvZooKeeper, DefaultZooKeeper)
	for _, a := range addrs {
		if err := dial(a, dialTimeout); err != nil {
			unavailable(tb, "shared ZooKeeper %s is not answering (%v); %s", a, err, hint)
		}
	}
	return addrs
}

// InCI reports whether the tests run in CI (env CI=true), where missing
// servers fail the test instead of skipping it.
func InCI() bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv("CI")))
	return v == "true" || v == "1"
}

// unavailable fails the test in CI and skips it elsewhere.
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if InCI() {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

func addrList(key string, def []string) []string {
	v := lookup(key)
	if v == "" {
		return append([]string(nil), def...)
	}
	var out []string
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		a = strings.TrimPrefix(a, "http://")
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// lookup returns the value of an environment variable, falling back to the
// env file written by scripts/services.sh.
func lookup(key string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return envFile()[key]
}

var (
	envFileOnce sync.Once
	envFileVals map[string]string
)

func envFile() map[string]string {
	envFileOnce.Do(func() {
		envFileVals = map[string]string{}
		dir := os.Getenv(EnvServicesDir)
		if dir == "" {
			dir = defaultDir
		}
		f, err := os.Open(filepath.Join(dir, "env"))
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			line = strings.TrimPrefix(line, "export ")
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
				v = v[1 : len(v)-1]
			}
			envFileVals[strings.TrimSpace(k)] = v
		}
	})
	return envFileVals
}

func dial(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// redisPing sends an inline PING and expects +PONG.
func redisPing(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

// freePorts returns n distinct free loopback ports. The listeners are held
// until all ports are chosen so the same port is not returned twice.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, 0, n)
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("testserver: no free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// binary finds an executable: env var (or the services env file), then PATH.
// A missing binary skips the test (fails it in CI).
func binary(tb testing.TB, envKey string, names ...string) string {
	tb.Helper()
	if p := lookup(envKey); p != "" {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	for _, n := range names {
		if p, err := lookPath(n); err == nil {
			return p
		}
	}
	unavailable(tb, "testserver: %s not found (set %s or put it on PATH); %s", names[0], envKey, hint)
	return ""
}
