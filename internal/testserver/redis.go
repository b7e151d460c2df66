package testserver

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartRedis starts a dedicated redis-server on a free loopback port with
// its working directory in tb.TempDir(); it is stopped when the test ends.
// By default nothing is persisted (--save ” --appendonly no), so a
// restarted server comes back empty; pass e.g. "--appendonly", "yes" in
// extraArgs to keep data across Stop/Start. Any redis-server option can be
// passed that way ("--requirepass", "pw"; "--maxmemory-policy",
// "allkeys-lru"; "--rename-command", "CONFIG", "").
func StartRedis(tb testing.TB, extraArgs ...string) *Proc {
	tb.Helper()
	bin := binary(tb, EnvRedisBin, "redis-server")
	dir := tb.TempDir()
	port := freePorts(tb, 1)[0]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	argv := []string{bin,
		"--port", fmt.Sprint(port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--dir", dir,
	}
	argv = append(argv, extraArgs...)
	p := newProc(tb, "redis", addr, filepath.Join(dir, "redis.log"), argv, redisStarted)
	p.Start()
	return p
}

// redisStarted reports whether a server answers on addr; one that asks for
// a password (--requirepass) has started too.
func redisStarted(addr string) error {
	err := redisPing(addr, time.Second)
	if err != nil && strings.Contains(err.Error(), "NOAUTH") {
		return nil
	}
	return err
}
