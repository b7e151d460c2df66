package testserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// hostServer listens on ip:port inside h's namespace and answers every
// connection with tag, then closes it.
func hostServer(t *testing.T, h *host, ip, tag string) string {
	t.Helper()
	var ln net.Listener
	if err := inNetns(h.ns, func() error {
		var err error
		ln, err = net.Listen("tcp", ip+":7000")
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", h.ns, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, tag)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// reach connects to addr from namespace ns ("" for the test's own), giving
// up after timeout, and returns what the server said, or the error.
func reach(ns, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	dial := func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	}
	var err error
	if ns == "" {
		err = dial()
	} else {
		err = inNetns(ns, dial)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestNetworkLinks checks the wiring: servers reach each other over the
// peer bridge and the test reaches them through relays; Isolate drops peer
// traffic both ways (as timeouts, not refusals) and keeps the client path;
// CutClients does the reverse; Heal restores both; and the addresses mean
// nothing outside the network.
func TestNetworkLinks(t *testing.T) {
	nw := NewNetwork(t)
	hosts := []*host{nw.addHost(), nw.addHost(), nw.addHost()}
	procs := make([]*Proc, len(hosts))
	peer := make([]string, len(hosts))
	client := make([]string, len(hosts))
	for i, h := range hosts {
		peer[i] = hostServer(t, h, h.peerIP, fmt.Sprintf("peer%d", i+1))
		client[i] = nw.relay(hostServer(t, h, h.clientIP, fmt.Sprintf("client%d", i+1)))
		procs[i] = &Proc{name: fmt.Sprintf("h%d", i+1), host: h}
	}
	want := func(from, addr, tag string) {
		t.Helper()
		if got, err := reach(from, addr, 5*time.Second); err != nil || got != tag {
			t.Errorf("from %q to %s: got %q, %v; want %q", from, addr, got, err, tag)
		}
	}
	wantCut := func(from, addr string) {
		t.Helper()
		got, err := reach(from, addr, time.Second)
		if ns := from; ns != "" && !isTimeout(err) {
			t.Errorf("from %s to %s: got %q, %v; want a timeout (silently dropped)", ns, addr, got, err)
		}
		if from == "" && got != "" {
			t.Errorf("through relay %s: got %q; want nothing", addr, got)
		}
	}
	all := func() {
		t.Helper()
		for i := range hosts {
			want("", client[i], fmt.Sprintf("client%d", i+1))
			for j := range hosts {
				if i != j {
					want(hosts[i].ns, peer[j], fmt.Sprintf("peer%d", j+1))
				}
			}
		}
	}
	all()

	// Servers do not reach each other over the client bridge.
	wantCut(hosts[0].ns, hosts[1].clientIP+":7000")

	// The same addresses seen from the test's namespace are plain loopback:
	// nobody there listens on them.
	for _, a := range []string{peer[0], hosts[0].clientIP + ":7000"} {
		if got, err := reach("", a, time.Second); err == nil || got != "" {
			t.Errorf("%s reached from the test's own namespace: %q, %v", a, got, err)
		}
	}

	nw.Isolate(procs[1])
	wantCut(hosts[0].ns, peer[1])
	wantCut(hosts[1].ns, peer[0])
	wantCut(hosts[1].ns, peer[2])
	want(hosts[0].ns, peer[2], "peer3")
	want("", client[1], "client2") // the client path stays
	nw.Heal(procs[1])
	all()

	nw.CutClients(procs[2])
	wantCut("", client[2])
	want(hosts[0].ns, peer[2], "peer3")
	want(hosts[2].ns, peer[1], "peer2")
	nw.Heal(procs[2])
	all()
}

// TestNetworkCleanup: a test's namespaces are gone when it ends, whether it
// passed or not, and a dead test binary's are swept by the next one.
func TestNetworkCleanup(t *testing.T) {
	if err := NetworkSupport(); err != nil {
		unavailable(t, "%v", err)
	}
	var names []string
	t.Run("uses", func(t *testing.T) {
		nw := NewNetwork(t)
		names = append(names, nw.hub, nw.addHost().ns, nw.addHost().ns)
		for _, n := range names {
			if _, err := os.Stat(netnsDir + "/" + n); err != nil {
				t.Fatalf("namespace %s: %v", n, err)
			}
		}
	})
	for _, n := range names {
		if _, err := os.Stat(netnsDir + "/" + n); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still there after its test ended (%v)", n, err)
		}
	}

	// A namespace of a process that is gone, and one of a live process
	// (pid 1): only the first is swept.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-1-hub", nsPrefix, cmd.Process.Pid)
	live := fmt.Sprintf("%s1-%d-sweeptest", nsPrefix, os.Getpid())
	for _, n := range []string{stale, live} {
		if err := addNetns(n); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = deleteNetns(stale); _ = deleteNetns(live) })
	sweepStale()
	if _, err := os.Stat(netnsDir + "/" + stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale namespace %s not swept (%v)", stale, err)
	}
	if _, err := os.Stat(netnsDir + "/" + live); err != nil {
		t.Errorf("namespace %s of a live process was swept: %v", live, err)
	}
	for _, n := range []string{"dlock-x-1", "other-12-1", "dlock-", fmt.Sprintf("dlock-%d-1", os.Getpid())} {
		if _, ok := stalePid(n); ok {
			t.Errorf("stalePid(%q) accepted a name that is not a stale one of ours", n)
		}
	}
}

// TestNetworkEtcd: the leader of an etcd cluster, cut off from the other
// members, loses its quorum while its clients still reach it; the others
// elect a new leader; after Heal all three serve again.
func TestNetworkEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	nw := NewNetwork(t)
	procs := StartEtcdCluster(t, 3, OnNetwork(nw))
	old := etcdLeader(t, procs)
	nw.Isolate(old)
	var rest []*Proc
	for _, p := range procs {
		if p != old {
			rest = append(rest, p)
		}
	}
	WaitEtcdHealthy(t, rest...)
	deadline := time.Now().Add(30 * time.Second)
	for etcdHealth(old.Addr()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("isolated %s still reports healthy", old.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := dial(old.Addr(), time.Second); err != nil {
		t.Errorf("client path to isolated %s: %v", old.Name(), err)
	}
	nw.Heal(old)
	WaitEtcdHealthy(t, procs...)
}

// TestNetworkZooKeeper: a follower cut off from the ensemble stops serving
// (mode ""), the other two keep a leader, and it rejoins after Heal.
func TestNetworkZooKeeper(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	nw := NewNetwork(t)
	procs := StartZooKeeper(t, 3, OnNetwork(nw))
	var follower *Proc
	var rest []*Proc
	for _, p := range procs {
		if follower == nil && ZooKeeperMode(p.Addr()) == "follower" {
			follower = p
		} else {
			rest = append(rest, p)
		}
	}
	if follower == nil {
		t.Fatal("no follower")
	}
	nw.Isolate(follower)
	deadline := time.Now().Add(30 * time.Second)
	for zkServing(follower.Addr()) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("isolated %s still serving", follower.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
	WaitZooKeeperServing(t, rest...)
	if err := zkRuok(follower.Addr()); err != nil {
		t.Errorf("client path to isolated %s: %v", follower.Name(), err)
	}
	nw.Heal(follower)
	WaitZooKeeperServing(t, procs...)
}

// etcdLeader returns the member that reports itself leader in /metrics.
func etcdLeader(t *testing.T, procs []*Proc) *Proc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range procs {
			resp, err := healthClient.Get("http://" + p.Addr() + "/metrics")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "\netcd_server_is_leader 1") {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no etcd leader")
	return nil
}
