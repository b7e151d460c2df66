package redislock

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/internal/testserver"
)

// commandLog records the name of each command a client sends, and
// whether the server refused it with NOSCRIPT.
type commandLog struct {
	mu    sync.Mutex
	names []string
}

func (h *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		name := cmd.Name()
		if redis.HasErrorPrefix(err, "NOSCRIPT") || err == redis.ErrNoScript {
			name += ":NOSCRIPT"
		}
		h.mu.Lock()
		h.names = append(h.names, name)
		h.mu.Unlock()
		return err
	}
}
func (h *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *commandLog) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.names
	h.names = nil
	return n
}

// TestScriptFlush: a server that lost the scripts (SCRIPT FLUSH, a
// restart) answers the driver's EVALSHA with NOSCRIPT; the driver sends the
// script itself (EVAL) and the lock works as before. Once the server has
// the scripts again, a cycle is two EVALSHAs and nothing else.
func TestScriptFlush(t *testing.T) {
	addr := testserver.StartRedis(t).Addr()
	ctx := t.Context()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	log := &commandLog{}
	rdb.AddHook(log)
	c, err := New(rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := c.Mutex("TestScriptFlush")
	cycle := func() uint64 {
		t.Helper()
		l, err := m.Lock(ctx)
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatalf("Unlock: %v", err)
		}
		return l.Token()
	}

	first := cycle()
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	log.take()
	second := cycle()
	if got, want := log.take(), []string{"evalsha:NOSCRIPT", "eval", "evalsha:NOSCRIPT", "eval"}; !slices.Equal(got, want) {
		t.Errorf("commands of the cycle after SCRIPT FLUSH: %q, want %q", got, want)
	}
	if second <= first {
		t.Errorf("token after SCRIPT FLUSH %d, not above the one before (%d)", second, first)
	}
	third := cycle()
	if got, want := log.take(), []string{"evalsha", "evalsha"}; !slices.Equal(got, want) {
		t.Errorf("commands of the next cycle: %q, want %q", got, want)
	}
	if third <= second {
		t.Errorf("token %d, not above the one before (%d)", third, second)
	}
	if n, err := admin.Exists(ctx, DefaultPrefix+"{TestScriptFlush}").Result(); err != nil || n != 0 {
		t.Errorf("lock key after the last Unlock: EXISTS %d, %v; want 0", n, err)
	}
}
