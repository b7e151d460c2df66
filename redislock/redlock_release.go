package redislock

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dlockio/dlock/driver"
)

// Release of a Redlock lock, batched per node as renewals are (batch.go):
// the releases in flight together on one node go in one script
// (rlreleasemany.lua), each entry owner-checked on its own exactly as
// rlrelease.lua does it (the same Lua function) and answered on its own.
// Releasing N locks at once costs a few scripts per node, not N. A node
// whose client cannot batch (a Cluster) runs rlrelease.lua for each lock.

// trimKeys implements keyTrimmer: a held Redlock lock keeps only its
// key's name (renewal needs no other); Release makes the names it needs
// again (keysFrom). Called once the acquisition is over, before the
// lock is returned, and after the last use of the other names by the
// attempt that won (its stragglers' fence writes have their own copy).
//
// The name is copied: keysOf made it a slice of the string that holds all
// the names, which it would keep.
func (l *redlockLock) trimKeys() { l.keys = keys{lock: strings.Clone(l.keys.lock)} }

// rlRelease is one lock's release in a node's batch.
type rlRelease struct {
	l        *redlockLock
	k        *keys // l's names, made again for the release
	deadline time.Time
	answer   func(v int64, err error) // called once, by the batch's sender
}

func (r *rlRelease) until() *time.Time { return &r.deadline }

// runReleases sends batch in one script and settles each entry.
func runReleases(ctx context.Context, n *node, batch []*rlRelease) {
	keys := make([]string, 0, 4*len(batch))
	args := make([]any, 0, 4*len(batch))
	for _, r := range batch {
		l, k := r.l, r.k
		keys = append(keys, k.lock, k.queue, k.alive, k.gone)
		args = append(args, l.value, k.channel, l.owner, goneMillis(l.ttl))
	}
	v, err := n.run(ctx, rlReleaseManyScript, keys, args...).Int64Slice()
	if err == nil && len(v) != len(batch) {
		err = fmt.Errorf("unexpected reply of %d entries to %d releases", len(v), len(batch))
	}
	for i, r := range batch {
		switch {
		case err != nil:
			r.answer(0, err)
		case v[i] < 0:
			r.answer(0, fmt.Errorf("release of key %q failed in its batch (a key of another type?)", r.l.keys.lock))
		default:
			r.answer(v[i], nil)
		}
	}
}

// Release implements driver.Lock. It goes to every node (into the node's
// next batch where it can) and is owner-checked on each, so a second call
// (the portable layer retries a failed release) changes nothing that is
// not this lock's. It returns when every node has answered or ctx ends; a
// node that has not answered by then counts as failed.
func (l *redlockLock) Release(ctx context.Context) error {
	type reply struct {
		n   *node
		v   int64
		err error
	}
	k := keysFrom([4]string{l.keys.lock}, redlockSuffixes)
	nodes := l.r.nodes
	replies := make(chan reply, len(nodes)) // late answers land here, unread
	for _, n := range nodes {
		if n.releases != nil {
			n.releases.add(ctx, &rlRelease{l: l, k: &k, answer: func(v int64, err error) { replies <- reply{n, v, err} }})
			continue
		}
		n.bg.Go(func() {
			v, err := n.run(ctx, rlReleaseScript, []string{k.lock, k.queue, k.alive, k.gone}, l.value, k.channel, l.owner, goneMillis(l.ttl)).Int64()
			replies <- reply{n, v, err}
		})
	}
	var owned, notOwned int
	var errs []error
	for range nodes {
		select {
		case rp := <-replies:
			switch {
			case rp.err != nil:
				errs = append(errs, rp.n.errorf(l.keys.lock, rp.err))
			case rp.v == 1:
				owned++
			default:
				notOwned++
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("redislock: %d of %d nodes did not answer: %w",
				len(nodes)-owned-notOwned-len(errs), len(nodes), ctx.Err()))
			return quorumError(fmt.Sprintf("released on %d of %d nodes", owned, len(nodes)), errs)
		}
	}
	switch {
	case owned >= l.r.quorum:
		return nil
	case notOwned > len(nodes)-l.r.quorum:
		return fmt.Errorf("%w: key %q was held on %d of %d nodes at release, want %d",
			driver.ErrLockLost, l.keys.lock, owned, len(nodes), l.r.quorum)
	}
	return quorumError(fmt.Sprintf("released on %d of %d nodes", owned, len(nodes)), errs)
}
