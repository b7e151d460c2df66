package redislock

import (
	"sync"
	"testing"

	"github.com/dlockio/dlock"
)

// holders checks the leases granted on one name as they are granted: a
// writer (or a permit beyond the limit) never overlaps a live lease it
// excludes, and tokens increase in grant order. A goroutine calls granted
// when its Lock returns and releasing before its Unlock, so every lease is
// registered only while the engine holds it for its owner (unless Done has
// closed: a lost lease counts as gone).
type holders struct {
	t     *testing.T
	limit int // > 0: at most limit leases at once (a semaphore); 0: readers and writers

	mu       sync.Mutex
	held     map[*dlock.Lease]bool // lease -> shared
	seen     map[uint64]bool
	maxTok   uint64 // of every lease granted so far
	maxExcl  uint64 // of every exclusive lease granted so far
	grants   int
	overlaps int // grants made while another shared lease was held
}

func newHolders(t *testing.T, limit int) *holders {
	return &holders{t: t, limit: limit, held: map[*dlock.Lease]bool{}, seen: map[uint64]bool{}}
}

func (h *holders) granted(l *dlock.Lease, shared bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	tok := l.Token()
	live := 0
	for o, oshared := range h.held {
		select {
		case <-o.Done():
			continue
		default:
		}
		live++
		if h.limit == 0 && (!shared || !oshared) {
			h.t.Errorf("lease (shared=%v, token %d) granted while lease (shared=%v, token %d) holds", shared, tok, oshared, o.Token())
		}
	}
	if h.limit > 0 && live >= h.limit {
		h.t.Errorf("permit (token %d) granted while %d of %d permits were held", tok, live, h.limit)
	}
	if live > 0 {
		h.overlaps++
	}
	if h.seen[tok] {
		h.t.Errorf("token %d granted twice", tok)
	}
	// An exclusive lease comes after every lease observed so far in grant
	// order; any lease comes after every exclusive one (and, for a
	// semaphore, each grant after those whose permits it reuses).
	if !shared && h.limit == 0 && tok <= h.maxTok {
		h.t.Errorf("writer's token %d is not above an earlier lease's %d", tok, h.maxTok)
	}
	if tok <= h.maxExcl {
		h.t.Errorf("token %d is not above an earlier writer's %d", tok, h.maxExcl)
	}
	h.seen[tok] = true
	h.maxTok = max(h.maxTok, tok)
	if !shared && h.limit == 0 {
		h.maxExcl = max(h.maxExcl, tok)
	}
	h.held[l] = shared
	h.grants++
}

func (h *holders) releasing(l *dlock.Lease) {
	h.mu.Lock()
	delete(h.held, l)
	h.mu.Unlock()
}
