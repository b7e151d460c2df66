package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// SingleNode is one Redis, one etcd member and one ZooKeeper server that the
// benchmark starts itself on free loopback ports, each with its own defaults
// (only ports, data directories and, for ZooKeeper, the four-letter words
// the report reads are set): the setup a user meets first, beside the
// project's 5-node / 3-member / 3-server shared servers.
type SingleNode struct {
	Redis, Etcd, ZK string // client addresses
	dir             string
	procs           []*exec.Cmd
}

// StartSingleNode starts the three servers and waits until each answers.
// The binaries are the ones scripts/services.sh uses (DLOCK_REDIS_BIN,
// DLOCK_ETCD_BIN, JAVA and DLOCK_ZK_CLASSPATH).
func StartSingleNode(ctx context.Context) (_ *SingleNode, err error) {
	dir, err := os.MkdirTemp("", "peerbench-1n-")
	if err != nil {
		return nil, err
	}
	s := &SingleNode{dir: dir}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	s.Redis = fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.Etcd = fmt.Sprintf("127.0.0.1:%d", ports[1])
	s.ZK = fmt.Sprintf("127.0.0.1:%d", ports[3])
	redisDir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(redisDir, 0o755); err != nil {
		return nil, err
	}
	if err := s.start("redis", env("DLOCK_REDIS_BIN", "redis-server"), "--port", fmt.Sprint(ports[0]),
		"--bind", "127.0.0.1", "--dir", redisDir); err != nil {
		return nil, err
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2])
	if err := s.start("etcd", env("DLOCK_ETCD_BIN", "etcd"), "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://"+s.Etcd, "--advertise-client-urls", "http://"+s.Etcd,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer, "--log-level", "warn"); err != nil {
		return nil, err
	}
	zkDir := filepath.Join(dir, "zk")
	if err := os.MkdirAll(zkDir, 0o755); err != nil {
		return nil, err
	}
	// conf/zoo_sample.cfg's settings: tickTime 2000, so sessions of 4 to 40 s.
	cfg := fmt.Sprintf("tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"+
		"admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,mntr\n", zkDir, ports[3])
	cfgPath := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cp := os.Getenv("DLOCK_ZK_CLASSPATH")
	if cp == "" {
		return nil, errors.New("DLOCK_ZK_CLASSPATH is not set (run scripts/services.sh up and source its env)")
	}
	if err := s.start("zookeeper", env("JAVA", "java"), "-Xmx256m", "-cp", cp, "-Dzookeeper.log.dir="+zkDir,
		"org.apache.zookeeper.server.quorum.QuorumPeerMain", cfgPath); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, addr := range []string{s.Redis, s.Etcd, s.ZK} {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return nil, fmt.Errorf("single-node server %s did not start: %v (logs in %s)", addr, err, dir)
			}
			time.Sleep(100 * time.Millisecond) // a process's port has no event to wait on
		}
	}
	// ZooKeeper listens before it serves: wait for its mode.
	for {
		out, err := fourLetter(s.ZK, "srvr")
		if err == nil && strings.Contains(out, "Mode: standalone") {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("single-node zookeeper %s is not serving: %v %q (logs in %s)", s.ZK, err, out, dir)
		}
		time.Sleep(100 * time.Millisecond) // nor has its mode
	}
	return s, nil
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (s *SingleNode) start(name, bin string, args ...string) error {
	log, err := os.Create(filepath.Join(s.dir, name+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the benchmark
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	s.procs = append(s.procs, cmd)
	return nil
}

// Stop stops the servers and removes their data.
func (s *SingleNode) Stop() error {
	for _, p := range s.procs {
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	return os.RemoveAll(s.dir)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// versions of the single-node servers, for the report.
func (s *SingleNode) String() string {
	return strings.Join([]string{"Redis " + s.Redis, "etcd " + s.Etcd, "ZooKeeper " + s.ZK}, ", ")
}
