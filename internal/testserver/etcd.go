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
// Start on a single stopped member waits only until its client port accepts
// connections, since a member cannot serve without a quorum; use
// [WaitEtcdHealthy] to wait until members serve again.
func StartEtcdCluster(tb testing.TB, n int) []*Proc {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("testserver: StartEtcdCluster needs n >= 1, got %d", n)
	}
	bin := binary(tb, EnvEtcdBin, "etcd")
	ports := freePorts(tb, 2*n)
	names := make([]string, n)
	var initial []string
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i+1)
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", names[i], ports[2*i+1]))
	}
	token := fmt.Sprintf("dlock-test-%d", time.Now().UnixNano())
	procs := make([]*Proc, n)
	for i := range n {
		dir := tb.TempDir()
		client := fmt.Sprintf("127.0.0.1:%d", ports[2*i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])
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
		procs[i] = newProc(tb, "etcd-"+names[i], client, filepath.Join(dir, "etcd.log"), argv,
			func(a string) error { return dial(a, time.Second) })
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
