package testserver

import (
	"testing"
	"time"
)

func TestSharedRedis(t *testing.T) {
	addrs := Redis(t)
	if len(addrs) == 0 {
		t.Fatal("no shared Redis addresses")
	}
	for _, a := range addrs {
		if err := redisPing(a, time.Second); err != nil {
			t.Errorf("PING %s: %v", a, err)
		}
	}
}

func TestStartRedisRestart(t *testing.T) {
	p := StartRedis(t)
	if !p.Running() {
		t.Fatal("not running after StartRedis")
	}
	if err := redisPing(p.Addr(), time.Second); err != nil {
		t.Fatalf("PING: %v", err)
	}

	p.Pause()
	if err := redisPing(p.Addr(), 200*time.Millisecond); err == nil {
		t.Error("paused server answered PING")
	}
	p.Resume()
	if err := redisPing(p.Addr(), time.Second); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}

	p.Stop()
	if p.Running() {
		t.Fatal("still running after Stop")
	}
	if err := redisPing(p.Addr(), 200*time.Millisecond); err == nil {
		t.Fatal("stopped server answered PING")
	}

	p.Start()
	if err := redisPing(p.Addr(), time.Second); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}

	p.Kill()
	if p.Running() {
		t.Fatal("still running after Kill")
	}
}

func TestStartEtcdCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	procs := StartEtcdCluster(t, 3)
	procs[0].Stop()
	WaitEtcdHealthy(t, procs[1:]...) // quorum of 2 keeps serving
	procs[0].Start()
	WaitEtcdHealthy(t, procs...)
}

func TestStartZooKeeper(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	procs := StartZooKeeper(t, 3)
	leaders := 0
	for _, p := range procs {
		if ZooKeeperMode(p.Addr()) == "leader" {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("want 1 leader, got %d", leaders)
	}
	procs[2].Kill()
	procs[2].Start()
	WaitZooKeeperServing(t, procs...)
}
