package check

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// holder is one lease in a multiState.
type holder struct {
	lease  int64
	client int
	until  int64 // the engine keeps it at least until then
	shared bool  // a reader's lease (read-write lock)
	lost   bool  // the holder was told it lost the lease before until (earlyLoss)
}

// multiState is the model's view of a lock that several leases can hold at
// once: a read-write lock's readers or writer, a semaphore's permits.
type multiState struct {
	hs     []holder // by lease id
	maxTok uint64   // highest token granted so far
}

func (s multiState) find(lease int64) int {
	for i, h := range s.hs {
		if h.lease == lease && lease != 0 {
			return i
		}
	}
	return -1
}

// with returns s holding hs plus add (if add.lease != 0), sorted, as a new slice.
func (s multiState) with(hs []holder, add holder) multiState {
	out := slices.Clone(hs)
	if add.lease != 0 {
		out = append(out, add)
	}
	slices.SortFunc(out, func(a, b holder) int { return cmp.Compare(a.lease, b.lease) })
	return multiState{hs: out, maxTok: s.maxTok}
}

func (s multiState) without(i int) multiState {
	return multiState{hs: slices.Delete(slices.Clone(s.hs), i, i+1), maxTok: s.maxTok}
}

// multiModel is a lock that admits several leases: limit 0 makes it a
// read-write lock (readers share with readers only), limit n > 0 a
// semaphore of n permits. A lease is kept at least until its last
// successful acquire or renewal call plus the TTL and may be dropped any
// time after, as in LeaseModel; a grant that needs a slot may take it only
// from a lease that is past that time.
//
// With earlyLoss, as in EarlyLossLeaseModel, a holder may be told of its
// loss before its lease's time, and its slot stays taken until that time.
type multiModel struct {
	limit     int
	earlyLoss bool
}

// markLost returns s with lease i's holder told of its loss.
func (s multiState) markLost(i int) multiState {
	h := s.hs[i]
	h.lost = true
	w := s.without(i)
	return w.with(w.hs, h)
}

// grants returns the states in which op's grant (returned by res) is legal:
// none if a lease it conflicts with is still within its TTL.
func (m multiModel) grants(s multiState, op, res Op) []multiState {
	t := opEnd(res)
	h := holder{lease: op.Lease, client: op.Client, until: res.until(), shared: op.Shared}
	if m.limit == 0 {
		var keep []holder
		for _, x := range s.hs {
			if op.Shared && x.shared {
				keep = append(keep, x)
				continue
			}
			if x.until >= t {
				return nil // a writer beside anyone, or a reader beside a writer
			}
		}
		return []multiState{s.with(keep, h)}
	}
	if len(s.hs) < m.limit {
		return []multiState{s.with(s.hs, h)}
	}
	var out []multiState // all permits taken: one of them must have expired
	for i, x := range s.hs {
		if x.until < t {
			w := s.without(i)
			out = append(out, w.with(w.hs, h))
		}
	}
	return out
}

func (m multiModel) step(st, in, out any) []any {
	s, op, res := st.(multiState), in.(Op), out.(Op)
	i := s.find(op.Lease)
	held := i >= 0
	switch op.Kind {
	case Acquire:
		var next []any
		switch res.Outcome {
		case OK:
			if res.Token <= s.maxTok {
				return nil
			}
			for _, g := range m.grants(s, op, res) {
				g.maxTok = res.Token
				next = append(next, g)
			}
			return next
		case Refused:
			// A reader or a permit may be refused for a writer or for
			// waiters queued ahead, which the model does not see.
			if len(s.hs) > 0 || op.Shared || m.limit > 0 {
				return []any{s}
			}
			return nil
		case Unknown:
			next = append(next, s)
			for _, g := range m.grants(s, op, res) {
				next = append(next, g)
			}
			return next
		default: // Cancelled: left nothing behind
			return []any{s}
		}
	case Renew, Release:
		var next multiState
		if held {
			next = s.without(i)
			if op.Kind == Renew {
				h := s.hs[i]
				h.until = res.until()
				next = s.with(next.hs, h)
			}
		}
		switch res.Outcome {
		case OK:
			if held {
				return []any{next}
			}
			return nil
		case Refused:
			if !held {
				return []any{s}
			}
			if s.hs[i].until < opEnd(res) {
				return []any{s.without(i)}
			}
			if m.earlyLoss {
				return []any{s.markLost(i)}
			}
			return nil
		default:
			if !held {
				return []any{s}
			}
			if op.Kind == Renew {
				// A renewal that may or may not have happened: the state in
				// which it did not (the lease ends no later) accepts every
				// history the other accepts, so it is the only one kept.
				// Branching here made each holder's end a choice of its
				// own, and the states' number the product of those.
				h := s.hs[i]
				h.until = min(h.until, res.until())
				w := s.without(i)
				return []any{w.with(w.hs, h)}
			}
			return []any{s, next}
		}
	case Lost:
		if !held {
			return []any{s}
		}
		if s.hs[i].until < op.Call {
			return []any{s.without(i)}
		}
		if m.earlyLoss {
			return []any{s.markLost(i)}
		}
		return nil
	case Crash:
		var keep []holder
		for _, h := range s.hs {
			if h.client != op.Client {
				keep = append(keep, h)
			}
		}
		if len(keep) == len(s.hs) {
			return []any{s}
		}
		return []any{s, s.with(keep, holder{})} // freed at once (flock) or later (TTL)
	}
	return nil
}

func (m multiModel) describeState(st any) string {
	s := st.(multiState)
	if len(s.hs) == 0 {
		return fmt.Sprintf("free (max token %d)", s.maxTok)
	}
	var parts []string
	for _, h := range s.hs {
		mode := ""
		if m.limit == 0 {
			mode = "W "
			if h.shared {
				mode = "R "
			}
		}
		parts = append(parts, fmt.Sprintf("%sL%d of c%d until %d", mode, h.lease, h.client, h.until))
	}
	return fmt.Sprintf("%s (max token %d)", strings.Join(parts, ", "), s.maxTok)
}

func (m multiModel) model() porcupine.NondeterministicModel {
	return porcupine.NondeterministicModel{
		Init: func() []any { return []any{multiState{}} },
		Step: m.step,
		Equal: func(a, b any) bool {
			x, y := a.(multiState), b.(multiState)
			return x.maxTok == y.maxTok && slices.Equal(x.hs, y.hs)
		},
		Hash: func(st any) uint64 {
			s := st.(multiState)
			h := fnv.New64a()
			fmt.Fprint(h, s.maxTok, s.hs)
			return h.Sum64()
		},
		DescribeOperation: describeOp,
		DescribeState:     m.describeState,
	}
}

// RWModel is a read-write lock with lease expiry: never a reader beside a
// writer whose lease is unexpired, never two writers; every grant's token
// above every earlier grant's, across both modes.
var RWModel = multiModel{}.model()

// EarlyLossRWModel is RWModel for an engine that may end a lease early
// and tell its holder (see EarlyLossLeaseModel).
var EarlyLossRWModel = multiModel{earlyLoss: true}.model()

// SemaphoreModel is a semaphore of n permits with lease expiry: never more
// than n unexpired holders; every grant's token above every earlier one's.
func SemaphoreModel(n int) porcupine.NondeterministicModel { return multiModel{limit: n}.model() }
