package main

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: quietZap()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli.Delete(context.Background(), strings.TrimPrefix(prefix, "/")+"/", clientv3.WithPrefix())
		cli.Close()
	})

	cmd := exec.Command(bin, "run", "--backend", backend, "--grace", "5s", "e2e-loss", "--",
		"sh", "-c", `echo started $DLOCK_TOKEN; sleep 30; echo survived`)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "started ") {
		t.Fatalf("command did not start: %q %v; stderr %s", sc.Text(), sc.Err(), stderr.String())
	}
	first, _ := strconv.ParseUint(strings.TrimPrefix(sc.Text(), "started "), 10, 64)

	lost := time.Now()
	// etcdlock keeps its keys under the URL's path without the leading slash.
	if r, err := cli.Delete(t.Context(), strings.TrimPrefix(prefix, "/")+"/", clientv3.WithPrefix()); err != nil || r.Deleted == 0 {
		t.Fatalf("deleting the lock keys: %v (deleted %v)", err, r)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text())
	}
	err = cmd.Wait()
	took := time.Since(lost)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitLost {
		t.Fatalf("want exit %d, got %v; stderr: %s", exitLost, err, stderr.String())
	}
	if took > 2*time.Second {
		t.Fatalf("the command was stopped %v after the loss", took)
	}
	if strings.Contains(rest.String(), "survived") {
		t.Fatal("the command ran on after the loss")
	}
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
