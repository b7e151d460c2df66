package redislock

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// waiter is one Acquire waiting on one lock; with Redlock the same waiter
// joins the hub of every node.
type waiter struct {
	id    string        // the lock's owner id: releases name the waiter to wake
	wake  chan struct{} // buffered 1: wake-ups coalesce, the hub never blocks
	grant atomic.Pointer[grant]
	// floor is the fence counter seen by the waiter's last failed attempt:
	// a grant with a token no larger was made before that attempt, which
	// found the lock with someone else, so the grant is stale.
	floor atomic.Uint64
	// ticket is a Redlock waiter's place in the nodes' queues: the time it
	// began to wait, the same on every node.
	ticket int64
	// deferTo (unix nanoseconds, 0 for none): a release found the waiter
	// new at the head of the queue, barging, and left the lock free for
	// others until then; the waiter tries then unless woken before
	// (scripts/single.lua, handOver).
	deferTo atomic.Int64
}

// grant is a single-node release that handed the lock to a waiter.
type grant struct {
	token uint64
	ttl   time.Duration
}

// parseGrant reads "OWNER TOKEN TTL" (release.lua).
func parseGrant(payload string) (owner string, g *grant, ok bool) {
	owner, rest, ok := strings.Cut(payload, " ")
	if !ok {
		return "", nil, false
	}
	tok, ttl, ok := strings.Cut(rest, " ")
	if !ok {
		return "", nil, false
	}
	t, err1 := strconv.ParseUint(tok, 10, 64)
	ms, err2 := strconv.ParseInt(ttl, 10, 64)
	if err1 != nil || err2 != nil {
		return "", nil, false
	}
	return owner, &grant{token: t, ttl: time.Duration(ms) * time.Millisecond}, true
}

// parseDeferral reads "OWNER +MICROSECONDS" (single.lua's handOver).
func parseDeferral(payload string) (owner string, d time.Duration, ok bool) {
	owner, us, ok := strings.Cut(payload, " +")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.ParseInt(us, 10, 64)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return owner, time.Duration(n) * time.Microsecond, true
}

func newWaiter(id string) *waiter {
	return &waiter{id: id, wake: make(chan struct{}, 1), ticket: time.Now().UnixMicro()}
}

func (w *waiter) signal() bool {
	select {
	case w.wake <- struct{}{}:
		return true
	default:
		return false
	}
}

// fresh returns the waiter's grant if it is newer than its last failed
// attempt, and drops a stale one.
func (w *waiter) fresh() *grant {
	g := w.grant.Load()
	if g != nil && g.token <= w.floor.Load() {
		w.grant.CompareAndSwap(g, nil)
		return nil
	}
	return g
}
