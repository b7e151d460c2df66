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
// groups: a group commit. The first callers send a round at once; the
// callers that arrive while maxInFlight rounds are in flight go together
// in the next. A
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
	op     func(nodePath string) any              // the multi's operation on a node
	single func(d *Driver, nodePath string) error // the same alone, if cheaper than a multi of one

	mu     sync.Mutex
	flying int    // rounds in flight
	next   *round // the round gathering callers, sent when the one in flight is done
}

func checkOp(p string) any  { return &zk.CheckVersionRequest{Path: p, Version: -1} }
func deleteOp(p string) any { return &zk.DeleteRequest{Path: p, Version: -1} }

func deleteOne(d *Driver, p string) error { return d.conn.Delete(p, -1) }

// round is one multi (or a few) for the nodes of the callers that joined.
type round struct {
	paths []string
	calls []func(r *round, err error) // per path: told the node's outcome when the round is answered
	// Set before the calls.
	sent time.Time
	errs []error // per path: nil (done), or why not
	mu   sync.Mutex
	ttls map[int64]time.Duration // a renewal's provenTTL per session, computed once
}

// join adds nodePath to b's next round, to be told its outcome by call.
// When fewer than maxInFlight rounds are in flight the round goes at once,
// sent by a goroutine started here; else it goes when one in flight is
// done. No goroutine of the caller's waits for it.
func (d *Driver) join(b *batcher, nodePath string, call func(*round, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		b.next = &round{}
	}
	r := b.next
	r.paths = append(r.paths, nodePath)
	r.calls = append(r.calls, call)
	if b.flying >= maxInFlight {
		return
	}
	b.next = nil
	b.flying++
	d.bg.Add(1)
	go d.sendRounds(b, r)
}

// maxInFlight bounds a batcher's rounds in flight. Two, not one: the
// callers that gather while the first is in flight go at once rather than
// a round trip later (renewals come in bursts, the first caller alone in
// its round, and a 2 s session's renewal has little time to spare).
const maxInFlight = 2

// sendRounds sends r, then the rounds that gather meanwhile, until none
// is waiting.
func (d *Driver) sendRounds(b *batcher, r *round) {
	defer d.bg.Done()
	for r != nil {
		d.sendRound(b, r)
		r = d.roundDone(b)
	}
}

// roundDone records that one of b's rounds is done, and returns the next
// one to send, if one has gathered (it counts as in flight).
func (d *Driver) roundDone(b *batcher) *round {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.next
	if r == nil {
		b.flying--
		return nil
	}
	b.next = nil
	return r
}

func (d *Driver) sendRound(b *batcher, r *round) {
	if f := testHooks.round; f != nil {
		f(b == &d.renew, len(r.paths))
	}
	d.send(b, r)
	// Before the round counts as done: a caller whose operation goes
	// again (errRetryRound) joins the next round, sent by this goroutine.
	for i, call := range r.calls {
		call(r, r.errs[i])
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
		run := func(paths []string, errs []error) {
			if len(paths) == 1 && b.single != nil {
				errs[0] = b.single(d, paths[0])
				return
			}
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
		}
		if lo == 0 && hi == len(r.paths) {
			run(r.paths, r.errs) // one chunk: no goroutine
			return
		}
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			run(r.paths[lo:hi], r.errs[lo:hi])
		}(lo, hi)
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

// batchAsync runs b's operation on nodePath in a round, and calls done
// with the round and the node's outcome, once, from the round's sender
// (done must return at once). An operation that took no effect because
// another of its multi failed goes again in a later round.
func (d *Driver) batchAsync(b *batcher, nodePath string, done func(*round, error)) {
	var call func(*round, error)
	call = func(r *round, err error) {
		if errors.Is(err, errRetryRound) {
			d.join(b, nodePath, call)
			return
		}
		done(r, err)
	}
	d.join(b, nodePath, call)
}

// batch is batchAsync waiting for the outcome; ctx's error if ctx ends
// first (the operation may still take effect).
func (d *Driver) batch(ctx context.Context, b *batcher, nodePath string) (*round, error) {
	type outcome struct {
		r   *round
		err error
	}
	ch := make(chan outcome, 1)
	d.batchAsync(b, nodePath, func(r *round, err error) { ch <- outcome{r, err} })
	select {
	case o := <-ch:
		return o.r, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
