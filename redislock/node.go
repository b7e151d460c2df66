package redislock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
)

// node is one Redis endpoint the driver locks on (a server, or a Cluster or
// Sentinel client): its client, its pub/sub hub and its eviction check.
type node struct {
	rdb  redis.UniversalClient
	name string // for errors: the address, when known
	hub  *hub
	// aware: rdb bounds its requests by their context's deadline
	// (ContextTimeoutEnabled); otherwise run does.
	aware    bool
	timeouts time.Duration // the client's own bound on a request, 0 if none (clientTimeouts)
	bg       *sync.WaitGroup
	done     <-chan struct{} // the driver's: closed by Close
	eviction evictionCheck
	batch    *batcher[*renewal]   // nil if the node's client cannot batch renewals (batch.go)
	releases *batcher[*rlRelease] // the same for Redlock releases (redlock_release.go)
}

// run runs script on the node and returns when it answers or ctx's
// deadline passes, whichever comes first, even with a client that ignores
// contexts (go-redis without ContextTimeoutEnabled waits out its own read
// and write timeouts): the portable layer bounds Unlock and Close by the
// deadline of the context it passes. A request cut short this way may still
// reach the server; every caller copes with that (owner-checked scripts,
// refused late attempts). Like go-redis, run does not abandon a request on
// a mere cancellation.
func (n *node) run(ctx context.Context, script *script, keys []string, args ...any) *redis.Cmd {
	return eval(ctx, n, script, keys, args, redis.NewCmd)
}

// runInt is run for a script that answers an integer, read as one.
func (n *node) runInt(ctx context.Context, script *script, keys []string, args ...any) (int64, error) {
	return eval(ctx, n, script, keys, args, redis.NewIntCmd).Result()
}

// runInts is run for a script that answers an array of integers, read
// as one (a *redis.Cmd boxes each element, then copies them out).
func (n *node) runInts(ctx context.Context, script *script, keys []string, args ...any) ([]int64, error) {
	return eval(ctx, n, script, keys, args, redis.NewIntSliceCmd).Result()
}

// eval sends script as redis.Script.Run does (EVALSHA, and EVAL if the
// server answers NOSCRIPT), bounded by ctx's deadline as run says, with
// the reply read into the command mk makes. The command's arguments are
// made here in one slice, where go-redis's EvalSha copies keys and args
// into a new one; keys and args are not kept.
func eval[C redis.Cmder](ctx context.Context, n *node, script *script, keys []string, args []any, mk func(context.Context, ...any) C) C {
	a := make([]any, 3, 3+len(keys)+len(args))
	a[0], a[1], a[2] = "evalsha", script.sha, len(keys)
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	if n.keeps(ctx) {
		return evalsha(ctx, n, script, a, mk) // no closure to make: the common case
	}
	return await(ctx, n, func() C { return evalsha(ctx, n, script, a, mk) }, mk)
}

// evalsha sends a, an EVALSHA of script, and EVAL instead if the server
// does not have the script (a restart, SCRIPT FLUSH): go-redis's own Eval
// then loads it.
func evalsha[C redis.Cmder](ctx context.Context, n *node, script *script, a []any, mk func(context.Context, ...any) C) C {
	send := func() C {
		cmd := mk(ctx, a...)
		if a[2].(int) > 0 {
			cmd.SetFirstKeyPos(3) // a Cluster client routes by the first key
		}
		_ = n.rdb.Process(ctx, cmd)
		return cmd
	}
	cmd := send()
	if err := cmd.Err(); err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")) {
		a[0], a[1] = "eval", script.src
		cmd = send()
	}
	return cmd
}

// keeps reports whether a request to n is bounded by ctx's deadline
// without help: there is none, or the client keeps it by itself.
func (n *node) keeps(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return !ok || n.aware || n.timeouts > 0 && n.timeouts <= time.Until(dl)+timeoutSlack
}

// await runs do, a request to n, bounded by ctx's deadline as run says;
// empty makes the command that carries the deadline's error.
func await[C redis.Cmder](ctx context.Context, n *node, do func() C, empty func(context.Context, ...any) C) C {
	if n.keeps(ctx) {
		return do()
	}
	// The client would wait longer than the deadline allows: wait for it
	// in a goroutine. (Only for deadlines shorter than the client's own
	// timeouts, e.g. the Unlock of a lock whose TTL is shorter: a
	// goroutine per request costs more than the request on a loaded
	// machine. go-redis's WithTimeout clone would be cheaper, but drops
	// the hooks the application added to its client.)
	done := make(chan C, 1)
	n.bg.Go(func() { done <- do() })
	select {
	case c := <-done:
		return c
	case <-ctx.Done():
		c := empty(ctx)
		c.SetErr(ctx.Err())
		return c
	}
}

// cleanup runs script on the node for an acquisition that gives up (a
// waiter leaving the queue), each try bounded by driver.CleanupTimeout. If
// the request or its reply is lost (the server did not answer), it tries
// again in the background after a pause that grows from 50 ms to at most
// cleanupRetryMax, until the server answers, the client is closed or the
// driver is (driver.CleanupTimeout's contract): a dequeue that never
// arrives leaves an entry that a release would grant, or wake, in vain.
// The script must be safe to run twice, and late.
func (n *node) cleanup(ctx context.Context, script *script, keys []string, args ...any) {
	ctx = context.WithoutCancel(ctx)
	try := func() bool {
		cctx, cancel := driver.CleanupContext(ctx)
		defer cancel()
		err := n.run(cctx, script, keys, args...).Err()
		return err == nil || isServerError(err) || errors.Is(err, redis.ErrClosed)
	}
	if try() {
		return
	}
	n.bg.Go(func() {
		for pause := 50 * time.Millisecond; ; pause = min(2*pause, cleanupRetryMax) {
			t := time.NewTimer(pause/2 + rand.N(pause/2+1))
			select {
			case <-n.done:
				t.Stop()
				return
			case <-t.C:
			}
			if try() {
				return
			}
		}
	})
}

// cleanupRetryMax is the longest pause between two tries of a cleanup.
const cleanupRetryMax = time.Second

// timeoutSlack is how far past a deadline a client's own timeout may end a
// request for the deadline to count as kept.
const timeoutSlack = 100 * time.Millisecond

// clientTimeouts returns the longest a request on c waits on its socket
// (the larger of its read and write timeouts), 0 if unbounded or unknown.
func clientTimeouts(c redis.UniversalClient) time.Duration {
	var r, w time.Duration
	switch c := c.(type) {
	case *redis.Client:
		r, w = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.ClusterClient:
		r, w = c.Options().ReadTimeout, c.Options().WriteTimeout
	case *redis.Ring:
		r, w = c.Options().ReadTimeout, c.Options().WriteTimeout
	}
	if r <= 0 || w <= 0 {
		return 0
	}
	return max(r, w)
}

// honoursContext reports whether c bounds requests by their context.
func honoursContext(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// fanOut runs fn(0..n-1) in parallel and waits for all.
func fanOut(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

// status runs status.lua on n: the lock's PTTL (-2 if free), its fence
// counter, and how many waiters whose deadlines are in the sorted set
// deadlines are still trying.
func (n *node) status(ctx context.Context, k keys, deadlines string) (pttl, fence, waiters int64, err error) {
	v, err := n.run(ctx, statusScript, []string{k.lock, k.fence, deadlines}).Int64Slice()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("unexpected reply %v", v)
	}
	if err != nil {
		return 0, 0, 0, n.errorf(k.lock, err)
	}
	return v[0], v[1], v[2], nil
}
