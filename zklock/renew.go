package zklock

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Renewals of one session's locks share their proof (see quorum.go): a
// group commit. The first Renew sends a round at once; the Renews that
// arrive while it is in flight go together in the next. A round is a
// multi of a check per node (in chunks, see maxProofOps): one round trip
// through the leader and one logged transaction prove every node of the
// round there and the session alive, as a check per lock did, so a client
// holding N locks spends a few requests per renewal interval, not N.
//
// A multi fails whole when one of its checks fails: the node found gone
// is lost, and the others of its chunk go again in the next round.

// A round's checks go in multis of at most maxProofOps checks and
// maxProofBytes of paths (ZooKeeper refuses a request over jute.maxbuffer,
// 1 MiB by default); the chunks are sent together.
const (
	maxProofOps   = 1000
	maxProofBytes = 256 << 10
)

// renewals is a driver's group commit of renewal proofs.
type renewals struct {
	mu     sync.Mutex
	flying bool        // a round is in flight
	next   *renewRound // the round gathering Renews, sent when the one in flight is done
}

// renewRound is one proof for the nodes of the Renews that joined it.
type renewRound struct {
	paths []string
	done  chan struct{}
	// Set before done is closed.
	sent time.Time
	errs []error // per path: nil (proven), or why not
	mu   sync.Mutex
	ttls map[int64]time.Duration // provenTTL per session, computed once
}

// join adds nodePath to the next round and returns it; the caller that
// finds no round in flight starts the sender.
func (d *Driver) joinRenewal(nodePath string) (*renewRound, int) {
	g := &d.renew
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		g.next = &renewRound{done: make(chan struct{})}
	}
	r := g.next
	r.paths = append(r.paths, nodePath)
	if !g.flying {
		g.flying = true
		d.bg.Add(1)
		go d.sendRenewals()
	}
	return r, len(r.paths) - 1
}

// sendRenewals sends rounds until none is waiting.
func (d *Driver) sendRenewals() {
	defer d.bg.Done()
	g := &d.renew
	for {
		g.mu.Lock()
		r := g.next
		g.next = nil
		if r == nil {
			g.flying = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if f := testHooks.renewRound; f != nil {
			f(len(r.paths))
		}
		d.prove(r)
		close(r.done)
	}
}

// prove sends r's checks, in chunks sent together, and records each
// node's outcome.
func (d *Driver) prove(r *renewRound) {
	r.errs = make([]error, len(r.paths))
	r.sent = time.Now()
	var wg sync.WaitGroup
	for lo := 0; lo < len(r.paths); {
		hi, size := lo, 0
		for hi < len(r.paths) && hi-lo < maxProofOps && (hi == lo || size+len(r.paths[hi]) <= maxProofBytes) {
			size += len(r.paths[hi])
			hi++
		}
		wg.Add(1)
		go func(paths []string, errs []error) {
			defer wg.Done()
			ops := make([]any, len(paths))
			for i, p := range paths {
				ops[i] = &zk.CheckVersionRequest{Path: p, Version: -1}
			}
			res, err := d.conn.Multi(ops...)
			// A check that fails fails its multi, with its own error in its
			// result; the results before it are OK and those after it
			// "runtime inconsistency": none of them is proven.
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

// errRetryRound: a check that went in a multi another check of which
// failed; it proves nothing, and goes again.
var errRetryRound = errors.New("zklock: renewal round failed on another node")

// ttl is the TTL the round proves for session sess (provenTTL, once per
// session).
func (r *renewRound) ttl(d *Driver, sess int64) time.Duration {
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

// proveNode joins nodePath to a renewal round and returns the round's
// send time and the outcome for the node.
func (d *Driver) proveNode(ctx context.Context, nodePath string) (*renewRound, error) {
	for {
		r, i := d.joinRenewal(nodePath)
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
