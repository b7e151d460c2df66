package redislock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockio/dlock/driver"
)

// drift is Redlock's allowance for the nodes' clocks running faster than
// ours.
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

// attempt makes one Redlock attempt: lock on a majority within the validity
// time, then raise the fence counters of a majority to the new token.
//
// Each attempt writes a value of its own (owner.N) and gives back whatever
// it took when it fails, without waiting: the give-back only ever deletes
// this attempt's keys, and marks the attempt given up on the node so that
// a request of it still on its way (a straggler, a client-side retry) is
// refused there rather than leaving a key to nobody for a whole TTL.
func (l *redlockLock) attempt(ctx context.Context, w *waiter) attempt {
	r := l.r
	nn := len(r.nodes)
	since := time.Now()
	valid := l.ttl - drift(l.ttl)
	if valid <= 0 {
		return attempt{err: driver.InvalidArgument("TTL", l.ttl, fmt.Sprintf("more than Redlock's drift allowance %v", drift(l.ttl)))}
	}
	deadline := since.Add(valid)
	l.tries++
	value := l.owner + "." + strconv.Itoa(l.tries)
	// Past the deadline a node's answer is useless, so no request outlives
	// it. The requests run without the caller's cancellation: the replies
	// that come after the caller gave up are read in the background, and
	// what they took is given back.
	nctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)

	type reply struct {
		i      int
		got    bool
		n      int64  // fence if got, else PTTL
		holder string // the key's value where held
		err    error
	}
	replies := make(chan reply, nn)
	ticket := ""
	if w != nil {
		ticket = strconv.FormatInt(w.ticket, 10)
	}
	// k: the names, for the requests that may outlive the attempt (its
	// stragglers): l.keys is trimmed once a later attempt is granted.
	nk := l.keys
	k := &nk
	ks := []string{k.lock, k.fence, k.queue, k.alive, k.gone}
	for i, n := range r.nodes {
		r.d.background(func() {
			rp := reply{i: i}
			v, err := n.run(nctx, rlLockScript, ks, value, ttlMillis(l.ttl), ticket, l.owner).Slice()
			if err == nil {
				rp.got, rp.n, rp.holder, err = parseLockReply(v)
			}
			if err != nil {
				rp.err = n.errorf(k.lock, err)
			}
			replies <- rp
		})
	}
	var (
		got     []int
		fence   int64
		pttls   []int64
		holders = map[string]int{}
		errs    []error
	)
	received := 0
	// mayHold: nodes that answered that the attempt took the key, or whose
	// answer was an error (it may have).
	mayHold := make([]bool, nn)
	// The replies the attempt does not wait for are read in the background:
	// a node that answers after a grant gets the token too; one that
	// answers after the attempt failed gets its give-back then, after its
	// own request, so that the two cannot cross on the way.
	var failed, wakeOnFail atomic.Bool
	rest := func(token uint64) {
		left := nn - received
		r.d.background(func() {
			defer cancel()
			for range left {
				rp := <-replies
				switch {
				case failed.Load():
					if rp.got || rp.err != nil {
						l.giveBackOn(k, r.nodes[rp.i], value, wakeOnFail.Load())
					}
				case rp.got:
					_ = r.nodes[rp.i].run(nctx, rlFenceScript, ks[:2], value, token).Err()
				}
			}
		})
	}
	// fail gives back what the attempt may hold on the nodes that have
	// answered (all: on every node), and has the others give it back when
	// they answer. A node that answered that someone else holds the key
	// needs nothing. wake: waiters may sleep on what this attempt held.
	fail := func(wake, all bool) {
		wakeOnFail.Store(wake)
		failed.Store(true)
		for i, n := range r.nodes {
			if all || mayHold[i] {
				l.giveBackOn(k, n, value, wake)
			}
		}
	}
	for received < nn && len(got) < r.quorum && len(got)+nn-received >= r.quorum {
		var rp reply
		select {
		case rp = <-replies:
		case <-ctx.Done():
			fail(false, false)
			rest(0)
			return attempt{err: ctx.Err()}
		}
		received++
		mayHold[rp.i] = rp.got || rp.err != nil
		switch {
		case rp.err != nil:
			errs = append(errs, rp.err)
		case rp.got:
			got = append(got, rp.i)
			fence = max(fence, rp.n)
		default:
			pttls = append(pttls, rp.n)
			holders[rp.holder]++
		}
	}
	if len(got) >= r.quorum && time.Now().Before(deadline) {
		token := uint64(fence) + 1
		// Stragglers may still take the key on their node: that is ours
		// too, renewed and released with the rest, and it gets the token
		// as well (best effort, not waited for), so that more than a
		// bare majority carries it should one of the majority lose its
		// data.
		rest(token)
		fctx, fcancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		err := l.writeFence(fctx, got, token, value)
		fcancel()
		if err == nil && time.Now().Before(deadline) {
			l.token = token
			l.value = value
			return attempt{granted: true, validity: driver.Validity{Since: since, TTL: valid}}
		}
		// A majority was ours, but the fence token did not reach one in
		// time: waiters may have seen it held and sleep until a release,
		// so this give-back wakes the first in line.
		fail(true, true)
		if err != nil && !errors.Is(err, driver.ErrUnavailable) {
			return attempt{err: err}
		}
		return attempt{pause: rand.N(5 * time.Millisecond), wait: rand.N(5 * time.Millisecond)}
	}
	top := 0
	for _, c := range holders {
		top = max(top, c)
	}
	held := len(pttls)
	// Every outcome below gives back what the attempt took. It wakes the
	// first in line only where waiters may sleep on this attempt's keys: a
	// majority that came too late, or a split vote that made everyone see
	// most nodes held.
	wake := len(got) >= r.quorum || top < r.quorum && held > nn-r.quorum && len(errs) <= nn-r.quorum
	fail(wake, false)
	rest(0)
	if len(got) >= r.quorum {
		// A majority that came too late (the nodes or this process were
		// slow): try again, as after a split vote.
		return attempt{pause: rand.N(5 * time.Millisecond), wait: rand.N(5 * time.Millisecond)}
	}
	for _, err := range errs {
		if !errors.Is(err, driver.ErrUnavailable) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			// A node answered with an error that will not pass (a key of
			// another type, a key without TTL): report it, as a single
			// node would, rather than wait for it.
			return attempt{err: err}
		}
	}
	switch {
	case top >= r.quorum:
		// One holder has a majority: sleep until its release wakes the
		// first in line, or until enough keys expire that a majority
		// could be free.
		return attempt{wait: expiryWait(pttls, nn, r.quorum)}
	case len(errs) > nn-r.quorum:
		return attempt{err: quorumError(fmt.Sprintf("key %q: %d of %d nodes unreachable, a majority of %d is needed",
			l.keys.lock, len(errs), nn, r.quorum), errs)}
	case held > nn-r.quorum:
		// Busy, but nobody has a majority: contenders split the vote.
		// Every contender that sees this sleeps like a queued waiter, so
		// they do not all try again and split again; each has woken the
		// first in line where it gave a key back, so that someone tries
		// once the keys are gone, rather than everyone sleeping until
		// they would have expired.
		return attempt{wait: expiryWait(pttls, nn, r.quorum)}
	}
	// Most nodes were free (a split with few contenders): try again after a
	// random moment, so that contenders do not split again.
	return attempt{pause: rand.N(5 * time.Millisecond), wait: rand.N(5 * time.Millisecond)}
}

// expiryWait is how long until enough of the keys held by others (pttls,
// in milliseconds) have expired that a majority could be free.
func expiryWait(pttls []int64, nn, quorum int) time.Duration {
	slices.Sort(pttls)
	k := len(pttls) - (nn - quorum) // that many keys must go
	return time.Duration(pttls[k-1]+1) * time.Millisecond
}

// parseLockReply reads rllock.lua's {1, fence} or {0, pttl, holder}.
func parseLockReply(v []any) (got bool, n int64, holder string, err error) {
	if len(v) >= 2 {
		flag, ok1 := v[0].(int64)
		n, ok2 := v[1].(int64)
		switch {
		case ok1 && ok2 && flag == 1 && len(v) == 2:
			return true, n, "", nil
		case ok1 && ok2 && flag == 0 && len(v) == 3:
			if h, ok := v[2].(string); ok {
				return false, n, h, nil
			}
		}
	}
	return false, 0, "", fmt.Errorf("unexpected reply %v", v)
}

// giveBackOn deletes, in the background, the key attempt value took on n,
// if it did, and has n refuse the attempt's requests from now on. wake: the
// first in line is woken there if the key was the attempt's. A waiter keeps
// its place in the queue. k: the lock's names, as the attempt copied them.
func (l *redlockLock) giveBackOn(k *keys, n *node, value string, wake bool) {
	channel := ""
	if wake {
		channel = k.channel
	}
	ks := []string{k.lock, k.queue, k.alive, k.gone}
	l.r.d.background(func() {
		ctx, cancel := driver.CleanupContext(context.Background())
		defer cancel()
		_ = n.run(ctx, rlReleaseScript, ks, value, channel, "", goneMillis(l.ttl)).Err()
	})
}

// writeFence raises the fence counter to token on the nodes in got, where
// the key is still this attempt's; a majority must confirm.
func (l *redlockLock) writeFence(ctx context.Context, got []int, token uint64, value string) error {
	var mu sync.Mutex
	ok := 0
	var errs []error
	fanOut(len(got), func(j int) {
		n := l.r.nodes[got[j]]
		v, err := n.run(ctx, rlFenceScript, []string{l.keys.lock, l.keys.fence}, value, token).Int64()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, n.errorf(l.keys.fence, err))
		} else if v == 1 {
			ok++
		}
	})
	if ok < l.r.quorum {
		// Keys that expired meanwhile, or nodes that did not answer: worth
		// another attempt, unless a node answered with an error that will
		// not pass.
		err := fmt.Errorf("redislock: fence token written on %d nodes, want %d: %w", ok, l.r.quorum, errors.Join(errs...))
		for _, e := range errs {
			if !errors.Is(e, driver.ErrUnavailable) && !errors.Is(e, context.Canceled) {
				return err
			}
		}
		return driver.Unavailable(err)
	}
	return nil
}
