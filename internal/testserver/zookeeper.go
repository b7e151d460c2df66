package testserver

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ZKTickTime is the tickTime of the servers StartZooKeeper starts. The
// servers grant session timeouts between 2 and 20 ticks (1 s to 10 s) unless
// an option says otherwise.
const ZKTickTime = 500 * time.Millisecond

// ZKOption changes the configuration of the servers StartZooKeeper starts.
type ZKOption func(*zkConfig)

type zkConfig struct {
	maxSession time.Duration
}

// ZKMaxSessionTimeout sets the servers' maxSessionTimeout: a client asking
// for a longer session timeout is granted d. d must be a whole number of
// milliseconds and at least 2 × ZKTickTime (the default minimum).
func ZKMaxSessionTimeout(d time.Duration) ZKOption {
	return func(c *zkConfig) { c.maxSession = d }
}

// StartZooKeeper starts a dedicated ZooKeeper ensemble of n servers (n == 1
// runs standalone) on free loopback ports, with tickTime=500 so sessions as
// short as 1 s are allowed, and waits until every server has joined the
// quorum. The servers are stopped when the test ends. Addr of each Proc is
// its client address.
//
// Start on a single stopped server waits until it answers "ruok", which it
// does even before it has rejoined a quorum; use [WaitZooKeeperServing] to
// wait until servers serve again.
func StartZooKeeper(tb testing.TB, n int, opts ...ZKOption) []*Proc {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("testserver: StartZooKeeper needs n >= 1, got %d", n)
	}
	var conf zkConfig
	for _, o := range opts {
		o(&conf)
	}
	if m := conf.maxSession; m != 0 && (m < 2*ZKTickTime || m%time.Millisecond != 0) {
		tb.Fatalf("testserver: ZKMaxSessionTimeout(%v): want whole milliseconds, at least %v", m, 2*ZKTickTime)
	}
	java := binary(tb, EnvJava, "java")
	cp := zkClasspath()
	if cp == "" {
		unavailable(tb, "testserver: ZooKeeper classpath not found (set %s, or apt-get install zookeeper); %s", EnvZKClasspath, hint)
	}
	ports := freePorts(tb, 3*n)
	var servers []string
	if n > 1 {
		for i := range n {
			servers = append(servers, fmt.Sprintf("server.%d=127.0.0.1:%d:%d", i+1, ports[3*i+1], ports[3*i+2]))
		}
	}
	procs := make([]*Proc, n)
	for i := range n {
		dir := tb.TempDir()
		dataDir := filepath.Join(dir, "data")
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			tb.Fatalf("testserver: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dataDir, "myid"), fmt.Appendf(nil, "%d\n", i+1), 0o644); err != nil {
			tb.Fatalf("testserver: %v", err)
		}
		cfg := []string{
			fmt.Sprintf("tickTime=%d", ZKTickTime.Milliseconds()),
			"initLimit=10",
			"syncLimit=5",
			"dataDir=" + dataDir,
			fmt.Sprintf("clientPort=%d", ports[3*i]),
			"clientPortAddress=127.0.0.1",
			"maxClientCnxns=0",
			"admin.enableServer=false",
			"4lw.commands.whitelist=ruok,srvr,stat,mntr",
		}
		if conf.maxSession != 0 {
			cfg = append(cfg, fmt.Sprintf("maxSessionTimeout=%d", conf.maxSession.Milliseconds()))
		}
		cfg = append(cfg, servers...)
		cfgPath := filepath.Join(dir, "zoo.cfg")
		logCfg := filepath.Join(dir, "log4j.properties")
		if err := os.WriteFile(cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
			tb.Fatalf("testserver: %v", err)
		}
		if err := os.WriteFile(logCfg, []byte(zkLog4j), 0o644); err != nil {
			tb.Fatalf("testserver: %v", err)
		}
		argv := []string{java, "-Xmx256m", "-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
			"-cp", cp,
			"-Dzookeeper.log.dir=" + dir,
			"-Dlog4j.configuration=file:" + logCfg,
			"org.apache.zookeeper.server.quorum.QuorumPeerMain", cfgPath,
		}
		addr := fmt.Sprintf("127.0.0.1:%d", ports[3*i])
		procs[i] = newProc(tb, fmt.Sprintf("zk%d", i+1), addr, filepath.Join(dir, "zookeeper.log"), argv, zkRuok)
	}
	startAll(tb, procs, func(p *Proc) error { return zkServing(p.Addr()) })
	return procs
}

// WaitZooKeeperServing waits until each given server is leader, follower or
// standalone, failing the test after a minute.
func WaitZooKeeperServing(tb testing.TB, procs ...*Proc) {
	tb.Helper()
	deadline := time.Now().Add(startTimeout)
	for _, p := range procs {
		for {
			err := zkServing(p.Addr())
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testserver: %s not serving: %v%s", p.Name(), err, p.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// ZooKeeperMode returns the server's mode from the "srvr" command: leader,
// follower, standalone, or "" if it is not serving.
func ZooKeeperMode(addr string) string {
	out, err := zk4lw(addr, "srvr", time.Second)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if m, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(m)
		}
	}
	return ""
}

const zkLog4j = `log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n
`

func zkRuok(addr string) error {
	out, err := zk4lw(addr, "ruok", time.Second)
	if err != nil {
		return err
	}
	if out != "imok" {
		return fmt.Errorf("ruok: %q", out)
	}
	return nil
}

func zkServing(addr string) error {
	switch m := ZooKeeperMode(addr); m {
	case "leader", "follower", "standalone":
		return nil
	default:
		return fmt.Errorf("not serving (mode %q)", m)
	}
}

// zk4lw sends a four-letter-word command and returns the reply.
func zk4lw(addr, cmd string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// zkClasspath is DLOCK_ZK_CLASSPATH, or Debian's zookeeper jars. Debian's
// zookeeper.jar names its dependencies in its manifest Class-Path; the
// slf4j -> log4j 1.2 logging binding must be added.
func zkClasspath() string {
	if cp := lookup(EnvZKClasspath); cp != "" {
		return cp
	}
	if _, err := os.Stat("/usr/share/java/zookeeper.jar"); err != nil {
		return ""
	}
	var jars []string
	for _, j := range []string{"zookeeper.jar", "zookeeper-jute.jar", "slf4j-log4j12.jar", "log4j-1.2.jar"} {
		p := filepath.Join("/usr/share/java", j)
		if _, err := os.Stat(p); err == nil {
			jars = append(jars, p)
		}
	}
	return strings.Join(jars, ":")
}
