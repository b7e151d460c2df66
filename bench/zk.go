package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/internal/scenario"
	"github.com/dlockio/dlock/internal/scenario/engines"
)

// ZKRoot is the parent of the nodes the floor and zk.Lock make.
const ZKRoot = "/peerbench"

// ZKEngine is one shared ZooKeeper session; its dialer counts the requests
// written (go-zookeeper writes each request, pings included, with one Write).
type ZKEngine struct {
	Conn  *zk.Conn
	Addrs []string
	sent  atomic.Int64
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// dial counts every request written on the connections it makes.
func (e *ZKEngine) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	return countingConn{c, &e.sent}, nil
}

// NewZKEngine connects to the ensemble at servers.
func NewZKEngine(ctx context.Context, servers []string) (*ZKEngine, error) {
	e := &ZKEngine{Addrs: servers}
	conn, events, err := zk.Connect(servers, 10*time.Second, zk.WithDialer(e.dial), zk.WithLogger(engines.QuietLogger{}))
	if err != nil {
		return nil, err
	}
	e.Conn = conn
	for ev := range events {
		if ev.State == zk.StateHasSession {
			break
		}
		if ctx.Err() != nil {
			conn.Close()
			return nil, ctx.Err()
		}
	}
	if _, err := conn.Create(ZKRoot, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		conn.Close()
		return nil, err
	}
	return e, nil
}

// Close ends the session.
func (e *ZKEngine) Close() error { e.Conn.Close(); return nil }

// Family returns the ZooKeeper family; the counter is a node's data.
func (e *ZKEngine) Family() Family {
	return Family{Name: "zk", Counter: engines.ZK(e.Conn), Commands: e.sent.Load}
}

// Floor is one create of an ephemeral node and one delete: the least any
// ZooKeeper lock can do. It has no waiting primitive, so a waiter spins.
func (e *ZKEngine) Floor() Contender {
	c := e.Conn
	return Contender{
		Name: "floor-zk", Family: "zk", Kind: Floor, NoWait: true,
		Note: "create ephemeral, spin; delete",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				p := ZKRoot + "/" + name
				for {
					_, err := c.Create(p, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
					if errors.Is(err, zk.ErrNodeExists) {
						if ctx.Err() != nil {
							return nil, ctx.Err()
						}
						continue
					}
					if err != nil {
						return nil, err
					}
					return func(context.Context) error { return c.Delete(p, -1) }, nil
				}
			}}, nil
		},
	}
}

// Lock is go-zookeeper's own zk.Lock (protected ephemeral-sequential node,
// watch on the predecessor). It takes no context: a Lock call that outlives
// the harness's deadline is released as soon as it returns.
func (e *ZKEngine) Lock() Contender {
	c := e.Conn
	return Contender{
		Name: "zk-lock", Family: "zk", Kind: Peer,
		Note: "zk.NewLock per lock, one shared session",
		NewWorker: func(context.Context) (scenario.Locker, error) {
			return peer{lock: func(ctx context.Context, name string) (func(context.Context) error, error) {
				l := zk.NewLock(c, ZKRoot+"/"+name, zk.WorldACL(zk.PermAll))
				if err := l.Lock(); err != nil {
					return nil, err
				}
				if ctx.Err() != nil {
					l.Unlock()
					return nil, ctx.Err()
				}
				return func(context.Context) error { return l.Unlock() }, nil
			}}, nil
		},
	}
}

// ZKAddrs returns the ZooKeeper servers from DLOCK_TEST_ZK or the defaults of
// scripts/services.sh.
func ZKAddrs() []string {
	return addrsFromEnv("DLOCK_TEST_ZK", "127.0.0.1:12181,127.0.0.1:12182,127.0.0.1:12183")
}

// ZKVersion asks the first server for its version with the four-letter
// word srvr.
func ZKVersion(servers []string) string {
	c, err := net.DialTimeout("tcp", servers[0], 2*time.Second)
	if err != nil {
		return "unknown"
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return "unknown"
	}
	b, _ := io.ReadAll(c)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Zookeeper version: "); ok {
			v, _, _ = strings.Cut(v, ",")
			v, _, _ = strings.Cut(v, "-") // Debian builds carry an unexpanded "-${mvngit.commit.id}"
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
