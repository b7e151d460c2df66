package check

import (
	"cmp"
	"fmt"
	"slices"
)

// Observation is one read of an election's leader (Election.Leader).
type Observation struct {
	Client int
	Call   int64 // Now() before the request
	Return int64 // Now() after the answer
	Term   uint64
	Value  string
	// WantTerm, when not 0, is the term of the leadership the client held
	// (its lease's Done still open after the answer) and WantValue the value
	// it had proclaimed before the call. If the lease's last grant or
	// renewal before the call promised it beyond the answer, the read must
	// show both.
	WantTerm  uint64
	WantValue string
	// Stream marks what a client's Observe delivered (Call = Return = its
	// arrival). A stream may lag, so only its own order is checked: its
	// terms never decrease, nobody leading (0) aside.
	Stream bool `json:",omitempty"`
}

// checkLeaders reports leader reads that went back in time: a stream
// whose terms decrease; a read with a
// term other than 0 (nobody leads) below a term that had been granted, or
// read, before the read began; and reads made by a leader whose lease the
// engine promised through the read that did not show it with its value.
func checkLeaders(ops, grants []Op, obs []Observation) []string {
	type seen struct {
		ret  int64
		term uint64
		what string
	}
	var known []seen
	for _, g := range grants {
		known = append(known, seen{g.Return, g.Token, fmt.Sprintf("granted to c%d", g.Client)})
	}
	var reads []Observation
	last := map[int]uint64{} // each client's stream's highest term so far
	var out []string
	for _, o := range obs {
		if o.Stream {
			if o.Term != 0 && o.Term < last[o.Client] {
				out = append(out, fmt.Sprintf("c%d observed leader term %d after term %d", o.Client, o.Term, last[o.Client]))
			}
			last[o.Client] = max(last[o.Client], o.Term)
			continue
		}
		reads = append(reads, o)
		if o.Term != 0 {
			known = append(known, seen{o.Return, o.Term, fmt.Sprintf("read by c%d", o.Client)})
		}
	}
	slices.SortFunc(known, func(a, b seen) int { return cmp.Compare(a.ret, b.ret) })
	byCall := slices.SortedFunc(slices.Values(reads), func(a, b Observation) int { return cmp.Compare(a.Call, b.Call) })
	var i int
	var best seen
	for _, o := range byCall {
		for ; i < len(known) && known[i].ret < o.Call; i++ {
			if known[i].term > best.term {
				best = known[i]
			}
		}
		if o.Term != 0 && o.Term < best.term {
			out = append(out, fmt.Sprintf("c%d read leader term %d after term %d had been %s", o.Client, o.Term, best.term, best.what))
		}
		if o.WantTerm != 0 && (o.Term != o.WantTerm || o.Value != o.WantValue) && promised(ops, grants, o) {
			out = append(out, fmt.Sprintf("c%d, leading with term %d and value %q, read leader term %d value %q", o.Client, o.WantTerm, o.WantValue, o.Term, o.Value))
		}
	}
	return out
}

// promised reports whether the engine kept o's leader's lease through o:
// its grant or a renewal that returned before o began ran beyond o's end.
func promised(ops, grants []Op, o Observation) bool {
	var lease int64
	for _, g := range grants {
		if g.Client == o.Client && g.Token == o.WantTerm {
			lease = g.Lease
		}
	}
	for _, op := range ops {
		if op.Lease == lease && lease != 0 && (op.Kind == Acquire || op.Kind == Renew) &&
			op.Outcome == OK && op.Return < o.Call && op.until() > o.Return {
			return true
		}
	}
	return false
}
