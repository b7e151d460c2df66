// Package embedded starts a real single-node etcd server inside the process,
// for `dlock demo`, examples, and users who want a lock service with no set-up.
//
//	srv, err := embedded.Start(ctx, "")
//	defer srv.Close()
//	cli, _ := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints()})
//	c, _ := etcdlock.New(cli, nil)
//
// It is a separate package so that programs using only etcdlock do not link
// the etcd server.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds how long Start waits for the server when ctx has no
// earlier deadline.
const startTimeout = 30 * time.Second

// Server is a running single-node etcd.
type Server struct {
	etcd      *embed.Etcd
	dir       string
	removeDir bool
	endpoints []string
}

// Start runs a single-node etcd with its data in dir (a new temporary
// directory if dir is ""), listening on free 127.0.0.1 ports, and returns
// once it serves requests. Its logs are discarded.
func Start(ctx context.Context, dir string) (*Server, error) {
	made := false
	if dir == "" {
		d, err := os.MkdirTemp("", "dlock-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		dir, made = d, true
	}
	s, err := start(ctx, dir)
	if err != nil {
		if made {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	s.removeDir = made
	return s, nil
}

func start(ctx context.Context, dir string) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}

	cfg := embed.NewConfig()
	cfg.Name = "dlock"
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// A single member elects itself at once; short ticks make that, and
	// thus Start, take well under a second instead of several.
	cfg.TickMs, cfg.ElectionMs = 50, 500

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: start: %w", err)
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("embedded etcd: not ready after %v", startTimeout)
	}
	return &Server{etcd: e, dir: dir, endpoints: []string{client.Host}}, nil
}

// Endpoints returns the client addresses (host:port) for clientv3.Config.
func (s *Server) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Dir returns the server's data directory.
func (s *Server) Dir() string { return s.dir }

// Close stops the server and removes its directory if Start made it.
func (s *Server) Close() error {
	s.etcd.Close()
	var err error
	select {
	case err = <-s.etcd.Err():
	default:
	}
	if s.removeDir {
		err = errors.Join(err, os.RemoveAll(s.dir))
	}
	return err
}

// freePorts returns n distinct loopback ports that were free a moment ago.
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
