package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlockio/dlock/internal/testserver"
)

func etcdBackend(t *testing.T) (backend string, endpoints []string, prefix string) {
	endpoints = testserver.Etcd(t)
	prefix = "/dlock-cli-test/" + randomID()
	return "etcd://" + strings.Join(endpoints, ",") + prefix, endpoints, prefix
}

func TestE2EEtcdCounter(t *testing.T) {
	backend, _, _ := etcdBackend(t)
	dlockBinary(t)
	runCounterProcs(t, backend, "e2e-counter", 30)
}

// TestE2ELossOnEtcd deletes the holder's key, as an operator would: the
// command is stopped and the next holder's token is larger.
func TestE2ELossOnEtcd(t *testing.T) {
	bin := dlockBinary(t)
	backend, endpoints, prefix := etcdBackend(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Delete(context.Background(), strings.TrimPrefix(prefix, "/")+"/", clientv3.WithPrefix())
		cli.Close()
	})

	h, tok := startLossHolder(t, bin, "$DLOCK_TOKEN", "--backend", backend, "--grace", "5s", "e2e-loss")
	first, _ := strconv.ParseUint(tok, 10, 64)

	lost := time.Now()
	// etcdlock keeps its keys under the URL's path without the leading slash.
	if r, err := cli.Delete(t.Context(), strings.TrimPrefix(prefix, "/")+"/", clientv3.WithPrefix()); err != nil || r.Deleted == 0 {
		t.Fatalf("deleting the lock keys: %v (deleted %v)", err, r)
	}
	// The deletion arrives by watch: the command must be stopped long before
	// the first renewal (TTL/3 = 5 s at the default TTL) could have noticed.
	took := h.expectStoppedByLoss(t, lost, 5*time.Second)
	t.Logf("deleted key noticed and command stopped in %v", took)

	out, err := exec.Command(bin, "run", "--backend", backend, "--no-wait", "e2e-loss", "--", "sh", "-c", `echo $DLOCK_TOKEN`).Output()
	if err != nil {
		t.Fatalf("next holder: %v", err)
	}
	next, _ := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if next <= first {
		t.Fatalf("next holder's token %d, want > %d", next, first)
	}
}

// TestE2EElectOnEtcd: the election scenario of TestE2EElectOnFile on etcd,
// with a 2 s TTL: a killed leader's lease runs out and the waiting
// candidate leads.
func TestE2EElectOnEtcd(t *testing.T) {
	backend, _, _ := etcdBackend(t)
	e2eElect(t, backend, []string{"--ttl", "2s"}, false)
}

// TestE2EElectOnZooKeeper: the same on ZooKeeper, with a 4 s TTL (the
// session timeout of the lock's session).
func TestE2EElectOnZooKeeper(t *testing.T) {
	servers := testserver.ZooKeeper(t)
	backend := "zk://" + strings.Join(servers, ",") + "/dlock-cli-test-" + randomID()
	e2eElect(t, backend, []string{"--ttl", "4s"}, false)
}

// TestE2EElectOnRedis: the same on a single Redis node, with a 2 s TTL
// (the leader's value kept with its lock; Observe re-reads at the held
// lock's expiry, as nobody publishes a crashed leader's end).
func TestE2EElectOnRedis(t *testing.T) {
	backend := "redis://" + testserver.Redis(t)[0] + "/?prefix=dlock-cli-test-" + randomID() + ":"
	e2eElect(t, backend, []string{"--ttl", "2s"}, false)
}

// TestE2ESharedAndLimitOnRedis: dlock run --shared and --limit on Redis,
// as separate processes (the checks of the file:// tests).
func TestE2ESharedAndLimitOnRedis(t *testing.T) {
	backend := "redis://" + testserver.Redis(t)[0]
	e2eShared(t, backend, "catalog-"+randomID())
	e2eLimit(t, backend, "api-"+randomID())
}

// TestE2ESharedAndLimitOnEtcdAndZooKeeper: the same on etcd and ZooKeeper.
func TestE2ESharedAndLimitOnEtcdAndZooKeeper(t *testing.T) {
	etcd, _, _ := etcdBackend(t)
	zk := "zk://" + strings.Join(testserver.ZooKeeper(t), ",") + "/dlock-cli-test-" + randomID()
	for _, backend := range []string{etcd, zk} {
		e2eShared(t, backend, "catalog")
		e2eLimit(t, backend, "api")
	}
}
