package embedded

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/dlockio/dlock/etcdlock"
)

// No goroutine needs ignoring: a closed embedded server stops all of its own.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartLockClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	srv, err := Start(ctx, "")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("started in %v at %v", time.Since(start), srv.Endpoints())

	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	c, err := etcdlock.New(cli, nil)
	if err != nil {
		t.Fatalf("etcdlock.New: %v", err)
	}
	l, err := c.Mutex("embedded/test").Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if l.Token() == 0 {
		t.Errorf("token 0")
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close client: %v", err)
	}
	cli.Close()

	dir := srv.Dir()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close server: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("data dir %s still there after Close (stat: %v)", dir, err)
	}
}
