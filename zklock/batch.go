package zklock

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Renewals and releases of one session's locks go to the server in
// groups: a group commit. The first caller sends a round at once; the
// callers that arrive while it is in flight go together in the next. A
// round is a multi of one operation per node (in chunks, see maxBatchOps):
//
//   - a renewal's check of the node (see quorum.go): one round trip through
//     the leader and one logged transaction prove every node of the round
//     there and the session alive, as a check per lock did, so a client
//     holding N locks spends a few requests per renewal interval, not N;
//   - a release's delete of the node: releasing many locks at once costs a
//     few transactions, not one each.
//
// A multi fails whole when one of its operations fails: that node's caller
// gets the error (ErrNoNode: the node is gone), and the others of its
// chunk go again in the next round.

// A round's operations go in multis of at most maxBatchOps operations and
// maxBatchBytes of paths (ZooKeeper refuses a request over jute.maxbuffer,
// 1 MiB by default); the chunks are sent together.
const (
	maxBatchOps   = 1000
	maxBatchBytes = 256 << 10
)

// batcher is a driver's group commit of one operation on nodes.
type batcher struct {
	op func(nodePath string) any // the multi's operation on a node

	mu     sync.Mutex
	flying bool   // a round is in flight
	next   *round // the round gathering callers, sent when the one in flight is done
}

func newBatcher(op func(nodePath string) any) batcher { return batcher{op: op} }

func checkOp(p string) any  { return &zk.CheckVersionRequest{Path: p, Version: -1} }
func deleteOp(p string) any { return &zk.DeleteRequest{Path: p, Version: -1} }

// round is one multi (or a few) for the nodes of the callers that joined.
type round struct {
	paths []string
	done  chan struct{}
	// Set before done is closed.
	sent time.Time
	errs []error // per path: nil (done), or why not
	mu   sync.Mutex
	ttls map[int64]time.Duration // a renewal's provenTTL per session, computed once
}

// join adds nodePath to b's next round and returns the round and the
// node's index in it; the caller that finds no round in flight starts the
// sender.
func (d *Driver) join(b *batcher, nodePath string) (*round, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		b.next = &round{done: make(chan struct{})}
	}
	r := b.next
	r.paths = append(r.paths, nodePath)
	if !b.flying {
		b.flying = true
		d.bg.Add(1)
		go d.sendRounds(b)
	}
	return r, len(r.paths) - 1
}

// sendRounds sends b's rounds until none is waiting.
func (d *Driver) sendRounds(b *batcher) {
	defer d.bg.Done()
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.flying = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		if f := testHooks.round; f != nil {
			f(b == &d.renew, len(r.paths))
		}
		d.send(b, r)
		close(r.done)
	}
}

// send sends r's operations, in chunks sent together, and records each
// node's outcome.
func (d *Driver) send(b *batcher, r *round) {
	r.errs = make([]error, len(r.paths))
	r.sent = time.Now()
	var wg sync.WaitGroup
	for lo := 0; lo < len(r.paths); {
		hi, size := lo, 0
		for hi < len(r.paths) && hi-lo < maxBatchOps && (hi == lo || size+len(r.paths[hi]) <= maxBatchBytes) {
			size += len(r.paths[hi])
			hi++
		}
		wg.Add(1)
		go func(paths []string, errs []error) {
			defer wg.Done()
			ops := make([]any, len(paths))
			for i, p := range paths {
				ops[i] = b.op(p)
			}
			res, err := d.conn.Multi(ops...)
			// An operation that fails fails its multi, with its own error
			// in its result; the results before it are OK and those after
			// it "runtime inconsistency": none of them took effect.
			failed := -1
			if err != nil && len(res) == len(paths) {
				failed = slices.IndexFunc(res, func(r zk.MultiResponse) bool { return r.Error != nil })
			}
			for i := range errs {
				switch {
				case failed < 0:
					errs[i] = err
				case i == failed:
					errs[i] = res[i].Error
				default:
					errs[i] = errRetryRound
				}
			}
		}(r.paths[lo:hi], r.errs[lo:hi])
		lo = hi
	}
	wg.Wait()
}

// errRetryRound: an operation that went in a multi another operation of
// which failed; it took no effect, and goes again.
var errRetryRound = errors.New("zklock: a multi failed on another node")

// ttl is the TTL a renewal round proves for session sess (provenTTL, once
// per session).
func (r *round) ttl(d *Driver, sess int64) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ttl, ok := r.ttls[sess]; ok {
		return ttl
	}
	if r.ttls == nil {
		r.ttls = make(map[int64]time.Duration, 1)
	}
	ttl := d.provenTTL(sess, r.sent)
	r.ttls[sess] = ttl
	return ttl
}

// batch runs b's operation on nodePath in a round, and returns the round
// and the node's outcome; ctx's error if ctx ends first (the operation
// may still take effect).
func (d *Driver) batch(ctx context.Context, b *batcher, nodePath string) (*round, error) {
	for {
		r, i := d.join(b, nodePath)
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if err := r.errs[i]; !errors.Is(err, errRetryRound) {
			return r, err
		}
	}
}
