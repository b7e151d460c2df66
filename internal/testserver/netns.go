package testserver

// (One file over 400 lines on purpose: addresses, bridges, the relay and
// cutting and healing links are one mechanism, read in this order.)
//
// A Network gives each dedicated server a network namespace of its own, so
// that a test can cut one server off from the others (a partition between
// servers) while the test's own path to that server stays up, or the other
// way round.
//
// Addresses. Every address lives in 127.213.0.0/16 and exists only inside
// namespaces this file creates; the test process's own namespace gets no
// address, route or link, so nothing here can reach or be reached from the
// machine's real networks, and two Networks (two tests, two test binaries,
// two developers on one machine) use the same addresses without clashing.
// Loopback addresses do not route between namespaces by default;
// route_localnet=1 in each of our namespaces lets them (checked by
// TestNetworkLinks).
//
//	namespace dlock-<pid>-<n>-hub    bridge bp (peers, no address)
//	                                 bridge bc 127.213.2.254/24 (clients)
//	namespace dlock-<pid>-<n>-s<i>   ep 127.213.1.<i>/24  veth to bp (port p<i>)
//	                                 ec 127.213.2.<i>/24  veth to bc (port c<i>)
//
// Servers listen for each other on their 127.213.1.<i> address and for
// clients on 127.213.2.<i>; the client bridge's ports are isolated, so a
// server reaches the hub there but no other server. The test process reaches a server through a
// relay: a listener on 127.0.0.1 in the test's own namespace whose upstream
// connections are made from the hub namespace (a socket keeps the
// namespace it was created in), so Proc.Addr stays a plain 127.0.0.1
// address and existing helpers (readiness checks, proxies, clients) work
// unchanged.
//
// Cutting. Isolate sets the hub's end of a server's peer veth down: the
// server's peer link loses carrier and the bridge stops forwarding to it,
// so its packets to and from the other servers are dropped silently, both
// ways, as in a real partition (timeouts, not resets), while its client
// link stays up. CutClients does the same to the client link. No packet
// filter (nft, iptables) is needed: iproute2's ip is the only tool.
//
// Cleanup. The namespaces (and with them every link) are deleted when the
// test ends, after its servers have stopped, pass or fail. A test binary
// killed before its cleanups ran leaves namespaces behind; the first
// Network of every later test binary deletes the ones whose creating
// process is gone (their names carry its pid).
//
// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2. Without them
// NewNetwork skips the test, or fails it when CI=true.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	nsPrefix   = "dlock-"
	netnsDir   = "/run/netns"
	hubClient  = "127.213.2.254"
	peerNet    = "127.213.1."
	clientNet  = "127.213.2."
	maxHosts   = 250
	relayDial  = 2 * time.Second
	ipCmdLimit = 30 * time.Second
)

// Network is a set of network namespaces joined by two bridges, one for
// traffic between servers and one for clients. Create it with NewNetwork,
// then start servers on it with the OnNetwork option of StartEtcdCluster or
// StartZooKeeper.
type Network struct {
	tb   testing.TB
	name string // dlock-<pid>-<n>
	hub  string // namespace holding the bridges; relays dial from it

	mu     sync.Mutex
	hosts  []*host
	relays []*relay
	closed bool
}

// host is one server's namespace and its two links.
type host struct {
	nw       *Network
	idx      int    // 1-based
	ns       string // namespace name
	peerIP   string // 127.213.1.idx: where servers reach each other
	clientIP string // 127.213.2.idx: where clients reach it
}

var networkSeq atomic.Int64

// NewNetwork creates an empty Network: the hub namespace and its bridges.
// Everything it creates is removed when the test ends. It skips the test
// (fails it when CI=true) if network namespaces cannot be made here.
func NewNetwork(tb testing.TB) *Network {
	tb.Helper()
	if err := NetworkSupport(); err != nil {
		unavailable(tb, "testserver: no network namespaces: %v", err)
	}
	sweepOnce.Do(sweepStale)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), networkSeq.Add(1))
	nw := &Network{tb: tb, name: name, hub: name + "-hub"}
	tb.Cleanup(nw.close)
	nw.must(addNetns(nw.hub))
	nw.must(ipBatch(nw.hub,
		"link add bp type bridge",
		"link add bc type bridge",
		"link set bp up",
		"link set bc up",
		"addr add "+hubClient+"/24 dev bc",
	))
	return nw
}

func (nw *Network) must(err error) {
	nw.tb.Helper()
	if err != nil {
		nw.tb.Fatalf("testserver: network %s: %v", nw.name, err)
	}
}

// addHost creates the next server namespace, linked to both bridges.
func (nw *Network) addHost() *host {
	nw.tb.Helper()
	nw.mu.Lock()
	idx := len(nw.hosts) + 1
	nw.mu.Unlock()
	if idx > maxHosts {
		nw.tb.Fatalf("testserver: network %s: more than %d hosts", nw.name, maxHosts)
	}
	h := &host{nw: nw, idx: idx, ns: fmt.Sprintf("%s-s%d", nw.name, idx),
		peerIP: peerNet + strconv.Itoa(idx), clientIP: clientNet + strconv.Itoa(idx)}
	nw.must(addNetns(h.ns))
	nw.mu.Lock()
	nw.hosts = append(nw.hosts, h)
	nw.mu.Unlock()
	p, c := fmt.Sprintf("p%d", idx), fmt.Sprintf("c%d", idx)
	nw.must(ipBatch(nw.hub,
		"link add "+p+" type veth peer name ep netns "+h.ns,
		"link add "+c+" type veth peer name ec netns "+h.ns,
		"link set "+p+" master bp up",
		"link set "+c+" master bc up",
		// Isolated ports reach the bridge (the hub) but not each other:
		// servers cannot talk over the client bridge, around a cut.
		"link set "+c+" type bridge_slave isolated on",
	))
	nw.must(ipBatch(h.ns,
		"addr add "+h.peerIP+"/24 dev ep",
		"addr add "+h.clientIP+"/24 dev ec",
		"link set ep up",
		"link set ec up",
	))
	return h
}

// command returns argv run inside the host's namespace. ip execs the
// server in place, so the process we start is the server itself (signals,
// Pdeathsig and exit status are its own).
func (h *host) command(argv []string) []string {
	return append([]string{ipPath(), "netns", "exec", h.ns}, argv...)
}

// Isolate cuts the server of p off from every other server of the network,
// both ways, until Heal. Its clients keep their path to it.
func (nw *Network) Isolate(p *Proc) {
	nw.tb.Helper()
	nw.setLink(p, "p", "down")
}

// CutClients cuts the path between the test process (every client that
// reaches p through p.Addr) and p's server, until Heal. The server keeps
// talking to the other servers.
func (nw *Network) CutClients(p *Proc) {
	nw.tb.Helper()
	nw.setLink(p, "c", "down")
}

// Heal restores both of p's links.
func (nw *Network) Heal(p *Proc) {
	nw.tb.Helper()
	nw.setLink(p, "p", "up")
	nw.setLink(p, "c", "up")
}

func (nw *Network) setLink(p *Proc, kind, state string) {
	nw.tb.Helper()
	if p.host == nil || p.host.nw != nw {
		nw.tb.Fatalf("testserver: %s is not on network %s", p.Name(), nw.name)
	}
	nw.must(ipBatch(nw.hub, fmt.Sprintf("link set %s%d %s", kind, p.host.idx, state)))
}

// relay returns a 127.0.0.1 address in the test's namespace whose
// connections are forwarded to upstream as seen from the hub namespace.
func (nw *Network) relay(upstream string) string {
	nw.tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		nw.tb.Fatalf("testserver: relay to %s: %v", upstream, err)
	}
	r := &relay{nw: nw, ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	nw.mu.Lock()
	nw.relays = append(nw.relays, r)
	nw.mu.Unlock()
	r.wg.Add(1)
	go r.accept()
	return ln.Addr().String()
}

// dial connects to addr from the hub namespace.
func (nw *Network) dial(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(nw.hub, func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

func (nw *Network) close() {
	nw.mu.Lock()
	nw.closed = true
	relays, hosts := nw.relays, nw.hosts
	nw.mu.Unlock()
	for _, r := range relays {
		r.close()
	}
	// The servers were stopped by their own cleanups, which ran before this
	// one; anything still inside (a test that failed half-way through
	// starting one) is ours and goes with the namespace.
	names := []string{nw.hub}
	for _, h := range hosts {
		names = append(names, h.ns)
	}
	for _, n := range names {
		if err := deleteNetns(n); err != nil {
			nw.tb.Errorf("testserver: network %s: %v", nw.name, err)
		}
	}
}

// relay forwards connections from a listener in the test's namespace to a
// server in the network.
type relay struct {
	nw       *Network
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go r.serve(c)
	}
}

func (r *relay) serve(c net.Conn) {
	defer r.wg.Done()
	if !r.track(c) {
		c.Close()
		return
	}
	u, err := r.nw.dial(r.upstream, relayDial)
	if err != nil || !r.track(u) {
		r.untrack(c)
		c.Close()
		if u != nil {
			u.Close()
		}
		return
	}
	// Either side's end closes both, as a server's crash or a client's
	// close would.
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	c.Close()
	u.Close()
	<-done
	r.untrack(c)
	r.untrack(u)
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

// inNetns runs fn on an OS thread that has entered the named namespace. A
// socket fn creates stays in that namespace for its whole life. The thread
// goes back to its own namespace afterwards; if it cannot, it is left
// locked and dies with its goroutine, so no other goroutine ever runs in the
// wrong namespace.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(netnsDir + "/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", name, err))
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// ---------------------------------------------------------------- ip(8)

var (
	ipOnce sync.Once
	ipBin  string
)

func ipPath() string {
	ipOnce.Do(func() {
		ipBin, _ = lookPath("ip")
		if ipBin == "" {
			for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
				if _, err := os.Stat(p); err == nil {
					ipBin = p
					break
				}
			}
		}
	})
	return ipBin
}

// ipBatch runs ip commands (without the leading "ip") in one ip -batch,
// inside namespace ns ("" for the test's own).
func ipBatch(ns string, cmds ...string) error {
	if ipPath() == "" {
		return errors.New("ip (iproute2) not found")
	}
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command(ipPath(), args...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("ip %s [%s]: %v: %s", strings.Join(args, " "), strings.Join(cmds, "; "), err, strings.TrimSpace(out.String()))
		}
		return nil
	case <-time.After(ipCmdLimit):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("ip %s [%s]: no answer after %v", strings.Join(args, " "), strings.Join(cmds, "; "), ipCmdLimit)
	}
}

// addNetns creates a namespace with loopback up and route_localnet set, so
// that 127.213.x.x addresses route over its links, answering ARP only for
// the addresses of the link asked.
func addNetns(name string) error {
	if err := ipBatch("", "netns add "+name); err != nil {
		return err
	}
	err := ipBatch(name, "link set lo up")
	if err == nil {
		err = inNetns(name, func() error {
			// Every namespace takes all of 127/8 as its own (lo), so without
			// arp_ignore=1 each would answer ARP for the others' addresses.
			for _, kv := range [][2]string{
				{"all/route_localnet", "1"}, {"default/route_localnet", "1"},
				{"all/arp_ignore", "1"}, {"default/arp_ignore", "1"},
			} {
				p := "/proc/sys/net/ipv4/conf/" + kv[0]
				if err := os.WriteFile(p, []byte(kv[1]+"\n"), 0o644); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		_ = deleteNetns(name)
		return fmt.Errorf("set up namespace %s: %w", name, err)
	}
	return nil
}

// deleteNetns kills what still runs in a namespace (only ever processes
// this package started in a namespace of its own prefix) and deletes it.
func deleteNetns(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command(ipPath(), "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ipBatch("", "netns del "+name)
}

// ---------------------------------------------------------------- support

var (
	supportOnce sync.Once
	supportErr  error
	sweepOnce   sync.Once
)

// NetworkSupport reports why network namespaces cannot be used here (not
// root, no iproute2, a kernel or container that refuses), or nil. It
// creates and deletes one namespace the first time it is called.
func NetworkSupport() error {
	supportOnce.Do(func() {
		switch {
		case runtime.GOOS != "linux":
			supportErr = fmt.Errorf("network namespaces need Linux, not %s", runtime.GOOS)
		case os.Geteuid() != 0:
			supportErr = errors.New("network namespaces need root (run the tests as root, as CI does)")
		case ipPath() == "":
			supportErr = errors.New("ip not found (apt-get install iproute2; scripts/services.sh up installs it)")
		default:
			probe := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
			if err := addNetns(probe); err != nil {
				supportErr = err
				return
			}
			supportErr = deleteNetns(probe)
		}
	})
	return supportErr
}

// sweepStale deletes namespaces left by test binaries that were killed
// before their cleanups ran: ours by name, whose creating process is gone.
func sweepStale() {
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, ok := stalePid(e.Name())
		if !ok {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = deleteNetns(e.Name())
		}
	}
}

// stalePid parses dlock-<pid>-... and returns the pid of the creator.
func stalePid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return 0, false
	}
	return pid, true
}

// ---------------------------------------------------------------- options

// Option changes how StartEtcdCluster and StartZooKeeper run their servers.
type Option func(*options)

type options struct {
	net          *Network
	zkMaxSession time.Duration // ZooKeeper's maxSessionTimeout; 0: the default
}

// OnNetwork runs each server in a namespace of its own on nw, so that nw
// can cut it off from the other servers or from its clients.
func OnNetwork(nw *Network) Option { return func(o *options) { o.net = nw } }

func startOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}
