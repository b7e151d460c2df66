package redislock

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/internal/testserver"
)

// holderEnv, when set to "ADDR NAME TTL", makes the test binary a lock
// holder process instead of running tests (see TestMain).
const holderEnv = "DLOCK_REDISLOCK_HOLDER"

// holderMain takes the lock, says so on stdout and holds it, renewing,
// until killed.
func holderMain() int {
	f := strings.Fields(os.Getenv(holderEnv))
	ttl, _ := time.ParseDuration(f[2])
	rdb := redis.NewClient(&redis.Options{Addr: f[0]})
	c, err := New(rdb, nil, dlock.WithTTL(ttl))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	l, err := c.Mutex(f[1]).Lock(context.Background())
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("held", l.Token())
	<-l.Done() // only if lost; the test kills us first
	fmt.Println("lost", l.Err())
	return 1
}

// commandCounter counts the commands a client sends, except an EVALSHA
// answered NOSCRIPT: a server that has not cached a script yet (a fresh or
// restarted server, SCRIPT FLUSH) is sent the same script again by EVAL at
// once, and counting both would make a test of batching depend on which
// scripts the server happened to have seen before.
type commandCounter struct{ n atomic.Int64 }

func (h *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if !redis.HasErrorPrefix(err, "NOSCRIPT") {
			h.n.Add(1)
		}
		return err
	}
}
func (h *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestKilledHolderProcess: a holder process killed with SIGKILL is
// replaced by a waiter within TTL + 1 s, and the waiter did not poll.
func TestKilledHolderProcess(t *testing.T) {
	addr := testserver.Redis(t)[0]
	const ttl = time.Second
	name := "TestKilledHolderProcess/" + t.Name() + "/" + fmt.Sprint(time.Now().UnixNano())

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), holderEnv+"="+addr+" "+name+" "+ttl.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "held ") {
		t.Fatalf("holder process: %q, %v", line, err)
	}
	var holderToken uint64
	fmt.Sscan(strings.TrimPrefix(line, "held "), &holderToken)

	rdb := redis.NewClient(&redis.Options{Addr: addr})
	count := &commandCounter{}
	rdb.AddHook(count)
	c, err := New(rdb, nil, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); rdb.Close() })

	type result struct {
		l   *dlock.Lease
		err error
		at  time.Time
	}
	ch := make(chan result, 1)
	go func() {
		l, err := c.Mutex(name).Lock(context.Background())
		ch <- result{l, err, time.Now()}
	}()
	// Let the waiter see the lock held for a while (the holder renews).
	select {
	case r := <-ch:
		t.Fatalf("waiter got the lock while the holder lived: %v", r.err)
	case <-time.After(2 * ttl):
	}
	before := count.n.Load()
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-ch:
	case <-time.After(ttl + 5*time.Second):
		t.Fatal("waiter did not get the lock after the holder was killed")
	}
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	took := r.at.Sub(killed)
	t.Logf("holder killed; waiter held the lock %v later with %d commands (%d while the holder lived)",
		took, count.n.Load()-before, before)
	if took > ttl+time.Second {
		t.Errorf("replaced after %v, want within TTL %v + 1s", took, ttl)
	}
	if r.l.Token() <= holderToken {
		t.Errorf("token %d after the killed holder's %d", r.l.Token(), holderToken)
	}
	// A poll every few milliseconds would show as hundreds of commands;
	// the waiter retries at the holder's expiry times only (renewals move
	// them), plus the subscription.
	if n := count.n.Load(); n > 25 { // ~1 per holder renewal; a 10 ms poll would be ~270
		t.Errorf("waiter sent %d commands over %v: it polled", n, 2*ttl+took)
	}
	if err := r.l.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
}
