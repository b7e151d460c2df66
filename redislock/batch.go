package redislock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
)

// Batched renewal ("group commit"); Redlock releases are batched the same
// way (redlock_release.go). The renewals of one node go out in one
// script for many locks: the first Renew sends at once; those that arrive
// while batches are in flight go together in the next, at most maxBatch to
// a script, and at most maxInflight scripts at once (a loaded client or
// server makes each round trip slow: one at a time would cap the
// renewals a node can carry at maxBatch per round trip). The portable layer puts the renewals of one client on a common
// grid (driver.RenewCoalescer), so a client holding N locks sends a few
// scripts per node per renewal interval instead of N. Every entry is
// owner-checked on its own by the script, exactly as a single renewal is.
//
// Only a node whose client is a plain *redis.Client (a server, or a
// Sentinel-managed master) batches: a Cluster's locks are in as many hash
// slots as they have names, and one script may only touch one slot. A
// Cluster renews each lock by itself, as before.

var _ driver.RenewCoalescer = (*Driver)(nil)

// maxBatch bounds the entries of one script, so that it keeps the server
// busy for a millisecond or so, not for as long as ten thousand renewals
// take.
const maxBatch = 1000

// maxInflight bounds the batches of one node in flight at once.
const maxInflight = 4

// CoalescesRenewals implements driver.RenewCoalescer: true when every node
// batches its renewals.
func (d *Driver) CoalescesRenewals() bool {
	for _, n := range d.nodes {
		if n.batch == nil {
			return false
		}
	}
	return true
}

// renewal is one lock's entry in a batch: the keys and arguments
// renewmany.lua reads for it, and its outcome.
type renewal struct {
	key, aux string // the lock key (or shared holders) and its companion (value, or tokens)
	owner    string // the owner id (Redlock: the key's value)
	ttl      int64  // ms
	kind     string // renewmany.lua: 'x' exclusive, 'v' exclusive with a value, 's' shared, 'r' Redlock
	deadline time.Time
	answer   func(owned bool, err error) // called once, by the batch's sender
}

func (r *renewal) until() *time.Time { return &r.deadline }

// entry is what a batcher collects: a renewal, or a Redlock release
// (redlock_release.go). until is where add puts the deadline of the
// entry's context.
type entry interface{ until() *time.Time }

// batcher collects one node's renewals (or releases): run sends a batch
// in one script and settles each of its entries.
type batcher[E entry] struct {
	n        *node
	run      func(ctx context.Context, n *node, batch []E)
	mu       sync.Mutex
	pending  []E
	inflight int // senders running
}

// add queues e, whose answer is called once its batch is answered; if fewer than maxInflight batches are in flight, one goes
// out at once (in a goroutine that sends batches until none is pending: a
// few per node, not one per entry).
func (b *batcher[E]) add(ctx context.Context, e E) {
	if dl, ok := ctx.Deadline(); ok {
		*e.until() = dl
	}
	b.mu.Lock()
	b.pending = append(b.pending, e)
	lead := b.inflight < maxInflight
	if lead {
		b.inflight++
	}
	b.mu.Unlock()
	if lead {
		b.n.bg.Go(func() { b.send(ctx) })
	}
}

// take removes up to maxBatch pending entries. b.mu held.
func (b *batcher[E]) take() []E {
	k := min(len(b.pending), maxBatch)
	batch := b.pending[:k:k]
	b.pending = b.pending[k:]
	if len(b.pending) == 0 {
		b.pending = nil
	}
	return batch
}

// send runs the pending batches one after the other until none is left.
// Each request carries ctx's values (the first entry's), not its
// cancellation, and the latest deadline of the batch's entries (an entry
// whose own deadline passes stops waiting on its own).
func (b *batcher[E]) send(ctx context.Context) {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.sendOne(ctx, batch)
	}
}

func (b *batcher[E]) sendOne(ctx context.Context, batch []E) {
	var dl time.Time
	for _, e := range batch {
		d := *e.until()
		if d.IsZero() {
			dl = time.Time{}
			break
		}
		if d.After(dl) {
			dl = d
		}
	}
	rctx, cancel := context.WithoutCancel(ctx), context.CancelFunc(func() {})
	if !dl.IsZero() {
		rctx, cancel = context.WithDeadline(rctx, dl)
	}
	b.run(rctx, b.n, batch)
	cancel()
}

// runRenewals sends batch in one script and settles each entry.
func runRenewals(ctx context.Context, n *node, batch []*renewal) {
	keys := make([]string, 0, 2*len(batch))
	args := make([]any, 0, 3*len(batch))
	for _, r := range batch {
		keys = append(keys, r.key, r.aux)
		args = append(args, r.owner, r.ttl, r.kind)
	}
	v, err := n.run(ctx, renewManyScript, keys, args...).Int64Slice()
	if err == nil && len(v) != len(batch) {
		err = fmt.Errorf("unexpected reply of %d entries to %d renewals", len(v), len(batch))
	}
	for i, r := range batch {
		if err != nil {
			r.answer(false, err)
		} else {
			r.answer(v[i] == 1, nil)
		}
	}
}

// newBatcher returns the batcher of a node whose client can run one script
// over keys of many slots, nil for one that cannot (a Cluster, a Ring).
func newBatcher[E entry](n *node, run func(context.Context, *node, []E)) *batcher[E] {
	if _, ok := n.rdb.(*redis.Client); !ok {
		return nil
	}
	return &batcher[E]{n: n, run: run}
}

var (
	_ driver.AsyncRenewer = (*singleLock)(nil)
	_ driver.AsyncRenewer = (*redlockLock)(nil)
)
