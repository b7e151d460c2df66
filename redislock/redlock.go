package redislock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlockio/dlock/driver"
)

// This file is the lock on a majority of independent masters (Redlock):
// the topology, renewal and status; redlock_attempt.go makes the
// attempts, redlock_release.go releases. lock.go is the same for a single node.

var (
	_ topology    = (*redlock)(nil)
	_ candidate   = (*redlockLock)(nil)
	_ driver.Lock = (*redlockLock)(nil)
)

// redlock is the topology of a driver on several independent masters.
type redlock struct {
	d      *Driver
	nodes  []*node
	quorum int
	// missing: nodes that did not answer when the driver was opened from a
	// URL (a Redlock opens with a majority).
	missing []string
}

// majority is how many of n nodes a Redlock needs.
func majority(n int) int { return n/2 + 1 }

func (r *redlock) newLock(k keys, owner string, req driver.Request) candidate {
	return &redlockLock{lockBase: lockBase{keys: k, owner: owner, ttl: req.TTL}, r: r, value: owner}
}

// primitives: a Redlock is a mutex only. Readers and permits would need a
// majority of nodes to agree on a set of holders and on who queued first,
// which its per-node keys do not give.
func (r *redlock) primitives() (shared, semaphore, election bool) { return false, false, false }

func (r *redlock) kind() string { return "Redlock" }

func (r *redlock) notes() []string {
	notes := []string{fmt.Sprintf("Redlock over %d independent masters, majority %d: assumes bounded clock drift "+
		"(allowance TTL/100+2ms) and that a crashed node keeps its data (AOF fsync=always) or stays down "+
		"for a TTL before rejoining empty; tokens are written back to a majority before each grant so they "+
		"strictly increase under that assumption. Safety rests on timing (Kleppmann, \"How to do distributed "+
		"locking\"; Sanfilippo, \"Is Redlock safe?\"): use the fencing token; an eviction policy other than "+
		"noeviction can drop lock keys (allkeys-* is refused)", len(r.nodes), r.quorum)}
	if len(r.missing) > 0 {
		notes = append(notes, fmt.Sprintf("unreachable when opened: %s (locks need %d of the %d nodes)",
			strings.Join(r.missing, "; "), r.quorum, len(r.nodes)))
	}
	return notes
}

// status reads the lock on every node: it is held while a majority keeps
// it, and Waiters is the most any answering node has queued.
func (r *redlock) status(ctx context.Context, k keys) (driver.Status, error) {
	type reply struct {
		pttl, fence, waiters int64
		err                  error
	}
	rs := make([]reply, len(r.nodes))
	fanOut(len(r.nodes), func(i int) {
		rs[i].pttl, rs[i].fence, rs[i].waiters, rs[i].err = r.nodes[i].status(ctx, k, k.alive)
	})
	var st driver.Status
	var ttls []int64
	var errs []error
	for _, rp := range rs {
		if rp.err != nil {
			errs = append(errs, rp.err)
			continue
		}
		st.Waiters = max(st.Waiters, int(rp.waiters))
		st.Token = max(st.Token, uint64(rp.fence))
		if rp.pttl > 0 {
			ttls = append(ttls, rp.pttl)
		}
	}
	if len(errs) > len(r.nodes)-r.quorum {
		return driver.Status{}, quorumError(fmt.Sprintf("status read from %d of %d nodes", len(r.nodes)-len(errs), len(r.nodes)), errs)
	}
	if len(ttls) < r.quorum {
		st.Token = 0
		return st, nil
	}
	st.Held = true
	// The lock is held while a majority keeps it: until the quorum-th
	// longest TTL runs out.
	slices.SortFunc(ttls, func(a, b int64) int { return int(b - a) })
	st.TTLLeft = time.Duration(ttls[r.quorum-1]) * time.Millisecond
	return st, nil
}

// redlockLock is one Redlock acquisition.
type redlockLock struct {
	lockBase
	r *redlock
	// value is what the lock key holds while this acquisition owns it: the
	// owner id and the number of the attempt that won (owner.N), so that
	// giving back a failed attempt can never delete a later attempt's key.
	value string
	tries int // attempts made
}

// granted is never called: a Redlock release wakes the first waiter in
// line (rlrelease.lua publishes its id), it never hands the lock over.
func (l *redlockLock) granted(context.Context, *grant) (driver.Validity, error) {
	return driver.Validity{}, errors.New("redislock: a Redlock release handed a lock over")
}

// tookAfterWait has nothing to do: no grant message can be on its way.
func (l *redlockLock) tookAfterWait() {}

// abandon takes a waiter that gives up out of every node's queue. One that
// a release took out to wake it wakes the next in line in its place
// (dequeue.lua). A node that does not answer is asked again in the
// background (node.cleanup), so that a wake-up spent on the leftover entry
// meanwhile is passed on once the node is reachable again.
func (l *redlockLock) abandon(ctx context.Context, _ *waiter) {
	ks := []string{l.keys.queue, l.keys.alive, l.keys.lock}
	fanOut(len(l.r.nodes), func(i int) {
		l.r.nodes[i].cleanup(ctx, dequeueScript, ks, l.owner, l.keys.channel)
	})
}

// partialJoin: a node whose subscription is not confirmed soon is left out
// rather than holding up the wait on the others.
func (l *redlockLock) partialJoin() bool { return true }

// Renew implements driver.Lock: RenewAsync, waited for.
func (l *redlockLock) Renew(ctx context.Context) (driver.Validity, error) {
	return driver.WaitRenewal(ctx, l)
}

// RenewAsync implements driver.AsyncRenewer: renewal must succeed on a
// majority. The renewal goes into every node's next batch; the last
// node's answer settles it (no goroutine waits for the nodes). Nodes that
// cannot batch (Clusters) are asked in goroutines of their own.
func (l *redlockLock) RenewAsync(ctx context.Context, done func(driver.Validity, error)) {
	since := time.Now()
	var mu sync.Mutex
	var owned, notOwned, answered int
	var errs []error
	settle := func() {
		switch {
		case owned >= l.r.quorum:
			done(driver.Validity{Since: since, TTL: l.ttl - drift(l.ttl)}, nil)
		case notOwned > len(l.r.nodes)-l.r.quorum:
			done(driver.Validity{}, fmt.Errorf("%w: key %q is held on %d of %d nodes, want %d",
				driver.ErrLockLost, l.keys.lock, owned, len(l.r.nodes), l.r.quorum))
		default:
			done(driver.Validity{}, quorumError(fmt.Sprintf("renewed on %d of %d nodes, want %d", owned, len(l.r.nodes), l.r.quorum), errs))
		}
	}
	for _, n := range l.r.nodes {
		answer := func(ok bool, err error) {
			mu.Lock()
			switch {
			case err != nil:
				errs = append(errs, n.errorf(l.keys.lock, err))
			case ok:
				owned++
			default:
				notOwned++
			}
			answered++
			last := answered == len(l.r.nodes)
			mu.Unlock()
			if last {
				settle()
			}
		}
		if n.batch != nil {
			n.batch.add(ctx, &renewal{key: l.keys.lock, aux: l.keys.lock, owner: l.value, ttl: ttlMillis(l.ttl), kind: "r", answer: answer})
			continue
		}
		n.bg.Go(func() {
			v, err := n.run(ctx, renewScript, []string{l.keys.lock}, l.value, ttlMillis(l.ttl)).Int64()
			answer(v == 1, err)
		})
	}
}

// quorumError reports that too few nodes answered: unavailable if every
// failure may pass, otherwise the permanent failures come first.
func quorumError(what string, errs []error) error {
	err := fmt.Errorf("redislock: %s: %w", what, errors.Join(errs...))
	for _, e := range errs {
		if !errors.Is(e, driver.ErrUnavailable) {
			return err
		}
	}
	return driver.Unavailable(err)
}
