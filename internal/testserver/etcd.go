package testserver

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartEtcdCluster starts a dedicated etcd cluster of n members on free
// loopback ports, each with its data dir in tb.TempDir(), and waits until
// every member reports healthy. The members are stopped when the test ends.
// Addr of each Proc is the member's client address (host:port).
//
// With OnNetwork(nw), each member runs in a namespace of its own on nw
// (members talk to each other over nw's peer bridge) and Addr is a relay to
// its client port, still on 127.0.0.1.
//
// Start on a single stopped member waits only until its client port accepts
// connections, since a member cannot serve without a quorum; use
// [WaitEtcdHealthy] to wait until members serve again.
func StartEtcdCluster(tb testing.TB, n int, opts ...Option) []*Proc {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("testserver: StartEtcdCluster needs n >= 1, got %d", n)
	}
	o := startOptions(opts)
	bin := binary(tb, EnvEtcdBin, "etcd")
	names := make([]string, n)
	clients, peers := make([]string, n), make([]string, n)
	hosts := make([]*host, n)
	if o.net != nil {
		for i := range n {
			hosts[i] = o.net.addHost()
			clients[i], peers[i] = hosts[i].clientIP+":2379", "http://"+hosts[i].peerIP+":2380"
		}
	} else {
		ports := freePorts(tb, 2*n)
		for i := range n {
			clients[i] = fmt.Sprintf("127.0.0.1:%d", ports[2*i])
			peers[i] = fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
		}
	}
	var initial []string
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i+1)
		initial = append(initial, names[i]+"="+peers[i])
	}
	token := fmt.Sprintf("dlock-test-%d", time.Now().UnixNano())
	procs := make([]*Proc, n)
	for i := range n {
		dir := tb.TempDir()
		client, peer := clients[i], peers[i]
		argv := []string{bin,
			"--name", names[i],
			"--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", "http://" + client,
			"--advertise-client-urls", "http://" + client,
			"--listen-peer-urls", peer,
			"--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", token,
			"--initial-cluster-state", "new",
			"--heartbeat-interval", "100",
			"--election-timeout", "1000",
			"--log-level", "warn",
		}
		addr := client
		if h := hosts[i]; h != nil {
			argv, addr = h.command(argv), o.net.relay(client)
		}
		procs[i] = newProc(tb, "etcd-"+names[i], addr, filepath.Join(dir, "etcd.log"), argv,
			func(a string) error { return dial(a, time.Second) })
		procs[i].host = hosts[i]
	}
	startAll(tb, procs, func(p *Proc) error { return etcdHealth(p.Addr()) })
	return procs
}

// WaitEtcdHealthy waits until each given member reports healthy on /health
// (which needs a quorum), failing the test after a minute.
func WaitEtcdHealthy(tb testing.TB, procs ...*Proc) {
	tb.Helper()
	deadline := time.Now().Add(startTimeout)
	for _, p := range procs {
		for {
			err := etcdHealth(p.Addr())
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("testserver: %s not healthy: %v%s", p.Name(), err, p.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

var healthClient = &http.Client{Timeout: 2 * time.Second}

func etcdHealth(addr string) error {
	resp, err := healthClient.Get("http://" + addr + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"health":"true"`) {
		return fmt.Errorf("health: %s %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
