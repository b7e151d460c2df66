package etcdlock

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Owner checks in bulk: a renewal's check that a key is still ours, the
// loss watch's check of the keys it may have missed (loss.go), and a
// release's owner-checked delete go together with the others of their kind
// ("group commit"): the first caller sends at once, callers arriving while
// a batch is in flight go together in the next one.
//
// A check is a read of the key, compared with the lock's create revision
// and lease: a transaction of range ops only is read-only, and a
// linearizable read (etcd serves a transaction from a member's own state
// only if every op is a serializable range), confirmed by a quorum. A
// nested If(l.ours()) per key would tell the same, but etcd counts a nested
// transaction as a write (its isTxnReadonly accepts ranges only), through
// raft and the disk. A delete is a write anyway: each key's is a
// transaction nested in the batch's, If(l.ours()) Then(delete), so that
// each gets its own answer. A client holding N locks thus spends about
// N/defaultTxnOps transactions per renewal interval on them, and releasing
// many at once costs as few.

// defaultTxnOps is how many keys one transaction carries: etcd refuses a
// transaction with more than --max-txn-ops (128 by default) ops at any
// level, and a nested transaction's budget is what its parent leaves (the
// server's checkTxnRequest), so a key's two compares need two ops left.
const defaultTxnOps = 120

// batchParallel is how many transactions of one batch are in flight at
// once (15,360 keys): etcd appends and syncs the proposals in flight
// together, so a round trip costs about the same for one as for many.
const batchParallel = 128

// batchSenders is how many batches may be in flight at once. One: a second
// sender (so that a lone first caller's batch of one does not hold back
// those right behind it) did not shorten a release of 10,000 on the loaded
// test box, where a round trip took 0.3-1 s whatever its size.
const batchSenders = 1

// answer says whether a check's read, or a delete's nested transaction,
// found l's key still l's.
func (b *batcher) answer(l *lock, r *etcdserverpb.ResponseOp) bool {
	if b.del {
		return r.GetResponseTxn().GetSucceeded()
	}
	kvs := r.GetResponseRange().GetKvs()
	return len(kvs) == 1 && kvs[0].CreateRevision == l.rev && kvs[0].Lease == int64(l.ls.id)
}

// ownerOp is one key's owner check, or its owner-checked delete.
type ownerOp struct {
	l *lock
	// done is called once with the answer: ok if the key was l's (and,
	// with del, is deleted now). It is called by the batch's sender (or by
	// check, if the driver is closed) and returns at once.
	done func(ok bool, err error)
}

// batcher coalesces owner checks and deletes into few transactions.
type batcher struct {
	d       *Driver
	del     bool         // owner-checked deletes; else owner checks
	ops     atomic.Int64 // keys per transaction; halved when the server refuses that many
	mu      sync.Mutex
	queue   []*ownerOp
	senders int // goroutines sending batches (at most batchSenders)
	held    int // hold calls not yet released: no sender starts
}

func newBatcher(d *Driver, del bool) *batcher {
	b := &batcher{d: d, del: del}
	b.ops.Store(defaultTxnOps)
	return b
}

// owned reports whether l's key is still l's (same create revision, same
// lease), deleting it too for a batcher of deletes, in the next transaction
// the batcher sends. It returns ctx's error if ctx ends first; the
// transaction still runs, for the others in it.
func (b *batcher) owned(ctx context.Context, l *lock) (bool, error) {
	type result struct {
		ok  bool
		err error
	}
	ch := make(chan result, 1)
	b.check(l, func(ok bool, err error) { ch <- result{ok, err} })
	select {
	case r := <-ch:
		return r.ok, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// check is owned without the wait: done is called once with the answer,
// by the batch's sender, within releaseTimeout (at once if the driver is
// closed, possibly before check returns).
func (b *batcher) check(l *lock, done func(ok bool, err error)) {
	if err := b.enqueue(&ownerOp{l: l, done: done}); err != nil {
		done(false, err)
	}
}

// enqueue adds ops to the next batch, starting a goroutine to send it if
// fewer than batchSenders are and nothing holds the batcher back.
func (b *batcher) enqueue(ops ...*ownerOp) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.startLocked() {
		return errClosed
	}
	b.queue = append(b.queue, ops...)
	return nil
}

// hold keeps the batcher from starting a batch until release is called,
// so that the ops one goroutine enqueues in a loop (the owner checks of a
// renewal wave, enqueued by their shared keep-alive's answer) go in one
// batch, not a first one of the few enqueued before its sender ran and the
// rest a round trip later. Ops enqueued meanwhile that the batcher cannot
// send (the driver closed) are answered with errClosed by release.
func (b *batcher) hold() (release func()) {
	b.mu.Lock()
	b.held++
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		b.held--
		var refused []*ownerOp
		if len(b.queue) > 0 && !b.startLocked() {
			refused, b.queue = b.queue, nil
		}
		b.mu.Unlock()
		for _, op := range refused {
			op.done(false, errClosed)
		}
	}
}

// startLocked starts a goroutine to send the queue if fewer than
// batchSenders are and nothing holds the batcher back. It reports false
// only if it had to start one and the driver is closed. The caller holds
// b.mu. Whatever is queued is sent by a running sender or, while the
// batcher is held, by the one its release starts.
func (b *batcher) startLocked() bool {
	if b.held > 0 || b.senders >= batchSenders {
		return true
	}
	d := b.d
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	d.wg.Add(1)
	d.mu.Unlock()
	b.senders++
	go b.run()
	return true
}

// run sends what is queued, batch after batch, until the queue is empty.
// It yields once first: callers that enqueue at about the same time (many
// releases at once) then join the first batch rather than wait a round
// trip behind a batch of one, and a lone caller loses nothing.
func (b *batcher) run() {
	defer b.d.wg.Done()
	runtime.Gosched()
	for {
		b.mu.Lock()
		ops := b.queue
		b.queue = nil
		if len(ops) == 0 {
			b.senders--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.commit(ops)
	}
}

// commit sends ops in transactions of at most b.ops keys, batchParallel
// at a time, on a context of their own (bounded by releaseTimeout and the
// driver's life), and answers every op.
func (b *batcher) commit(ops []*ownerOp) {
	ctx, cancel := context.WithTimeout(b.d.closeCtx, releaseTimeout)
	defer cancel()
	sem := make(chan struct{}, batchParallel)
	var wg sync.WaitGroup
	for len(ops) > 0 {
		n := min(len(ops), int(b.ops.Load()))
		chunk := ops[:n]
		ops = ops[n:]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			b.send(ctx, chunk)
		})
	}
	wg.Wait()
}

// send commits one transaction for chunk, splitting it if the server
// refuses that many ops.
func (b *batcher) send(ctx context.Context, chunk []*ownerOp) {
	err := errClientClosed // clientv3 would retry on a closed client until ctx ends
	var resp *clientv3.TxnResponse
	if b.d.cli.Ctx().Err() == nil {
		then := make([]clientv3.Op, len(chunk))
		for i, op := range chunk {
			if b.del {
				then[i] = clientv3.OpTxn(op.l.ours(), []clientv3.Op{clientv3.OpDelete(op.l.key)}, nil)
			} else {
				// Not WithKeysOnly: etcd 3.7 leaves the lease out of it.
				then[i] = clientv3.OpGet(op.l.key)
			}
		}
		resp, err = b.d.cli.Txn(ctx).Then(then...).Commit()
	}
	if errors.Is(err, rpctypes.ErrTooManyOps) && len(chunk) > 1 {
		// A server with a lower --max-txn-ops: use half as many from now on.
		half := len(chunk) / 2
		b.ops.CompareAndSwap(b.ops.Load(), int64(max(half, 1)))
		b.send(ctx, chunk[:half])
		b.send(ctx, chunk[half:])
		return
	}
	for i, op := range chunk {
		if err != nil {
			op.done(false, err)
		} else {
			op.done(b.answer(op.l, resp.Responses[i]), nil)
		}
	}
}
