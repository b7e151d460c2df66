package check

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// leaseState is the model's view of one lock.
type leaseState struct {
	lease  int64 // holder's lease id, 0 when free
	client int
	until  int64  // the engine keeps the lock at least until then
	maxTok uint64 // highest token granted so far
	lost   bool   // the holder was told it lost the lease before until (EarlyLossLeaseModel)
}

func (s leaseState) free() leaseState { return leaseState{maxTok: s.maxTok} }

// expired reports whether the engine may have dropped the holder's lock by t.
func (s leaseState) expired(t int64) bool { return s.lease != 0 && s.until < t }

// LeaseModel is a mutex whose holder keeps the lock at least until the call
// time of its last successful acquire or renewal plus the TTL, and may lose
// it any time after. Tokens granted must exceed every earlier one.
var LeaseModel = leaseModel(false)

// EarlyLossLeaseModel is LeaseModel for an engine that may end a lease
// before its time and tell the holder so (a PostgreSQL session that ends
// takes its locks with it): the holder's loss (Lost, or a renewal or
// release refused) may come before its lease's time, but the lock stays
// taken until that time all the same: no grant to anyone before it.
var EarlyLossLeaseModel = leaseModel(true)

func leaseModel(earlyLoss bool) porcupine.NondeterministicModel {
	return porcupine.NondeterministicModel{
		Init: func() []any { return []any{leaseState{}} },
		Step: func(st, in, out any) []any {
			s, op, res := st.(leaseState), in.(Op), out.(Op)
			held := s.lease == op.Lease && s.lease != 0
			switch op.Kind {
			case Acquire:
				canGrant := s.lease == 0 || s.expired(opEnd(res))
				granted := leaseState{lease: op.Lease, client: op.Client, until: res.until(), maxTok: s.maxTok}
				switch res.Outcome {
				case OK:
					if canGrant && res.Token > s.maxTok {
						granted.maxTok = res.Token
						return []any{granted}
					}
					return nil
				case Refused:
					if s.lease != 0 {
						return []any{s}
					}
					return nil
				case Unknown:
					if canGrant {
						return []any{s, granted}
					}
					return []any{s}
				default: // Cancelled: left nothing behind
					return []any{s}
				}
			case Renew, Release:
				next := s.free()
				if op.Kind == Renew {
					next = s
					next.until = res.until()
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
					if s.expired(opEnd(res)) {
						return []any{s.free()}
					}
					if earlyLoss {
						s.lost = true
						return []any{s}
					}
					return nil
				default:
					if held {
						return []any{s, next}
					}
					return []any{s}
				}
			case Lost:
				if !held {
					return []any{s}
				}
				if s.expired(op.Call) {
					return []any{s.free()}
				}
				if earlyLoss {
					s.lost = true
					return []any{s}
				}
				return nil
			case Crash:
				if s.lease != 0 && s.client == op.Client {
					return []any{s, s.free()} // freed at once (flock) or later (TTL)
				}
				return []any{s}
			}
			return nil
		},
		DescribeOperation: describeOp,
		DescribeState: func(st any) string {
			s := st.(leaseState)
			if s.lease == 0 {
				return fmt.Sprintf("free (max token %d)", s.maxTok)
			}
			lost := ""
			if s.lost {
				lost = ", lost"
			}
			return fmt.Sprintf("L%d of c%d until %d%s (max token %d)", s.lease, s.client, s.until, lost, s.maxTok)
		},
	}
}

func describeOp(in, out any) string {
	op, res := in.(Op), out.(Op)
	kind := string(op.Kind)
	if op.Shared {
		kind = "shared " + kind
	}
	switch op.Kind {
	case Acquire:
		if res.Outcome == OK {
			return fmt.Sprintf("c%d %s L%d -> token %d", op.Client, kind, op.Lease, res.Token)
		}
	case Crash:
		return fmt.Sprintf("c%d crash", op.Client)
	}
	return fmt.Sprintf("c%d %s L%d -> %s %s", op.Client, kind, op.Lease, res.Outcome, res.Err)
}

// until is when the engine may drop the lock after op succeeded: the
// driver's own claim where it made one (the portable layer's deadline rests
// on it), else from the call time.
func (op Op) until() int64 {
	if op.Until != 0 {
		return op.Until
	}
	return op.Call + op.TTL
}

// opEnd is the latest time an operation can have taken effect.
func opEnd(op Op) int64 {
	if op.Return == 0 {
		return math.MaxInt64
	}
	return op.Return
}

// Report is the verdict on one run.
type Report struct {
	Name         string
	Linearizable porcupine.CheckResult
	Ops          int // lock operations
	Grants       int // successful acquires
	Faults       map[string]int

	Writes         int // write requests
	Accepted       int
	Refused        int // writes refused as stale (fenced)
	StaleAccepted  int // writes accepted with a stale token (unfenced)
	LostIncrements int // accepted increments missing from the final counter
	LostElements   int // acknowledged set elements missing from the final set

	Rechecks      int // readers' second reads (read-write lock)
	TornReads     int // readers that saw the state change under their read lock
	Enters        int // permit holders registered in the resource (semaphore)
	EntersRefused int // ... refused: the resource already had its limit in
	MaxIn         int // most permit holders in the resource at once
	Overfull      int // holders let in beyond the limit (unfenced)
	LeaderReads   int // Election.Leader calls checked
	Observed      int // what Election.Observe delivered, checked

	Violations []string // lock-level violations: these must never happen
	Unsafe     []string // resource damage: must be zero with fencing
	Dir        string   // where the history was saved, if it was
}

// Safe reports whether the run had no violation of any kind.
func (r *Report) Safe() bool { return len(r.Violations) == 0 && len(r.Unsafe) == 0 }

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d lock ops, %d grants, faults %v; lease model: %s; writes %d (accepted %d, refused stale %d, accepted stale %d); lost increments %d, lost elements %d",
		r.Name, r.Ops, r.Grants, r.Faults, r.Linearizable, r.Writes, r.Accepted, r.Refused, r.StaleAccepted, r.LostIncrements, r.LostElements)
	if r.Rechecks > 0 || r.TornReads > 0 {
		fmt.Fprintf(&b, "; reader rechecks %d, torn reads %d", r.Rechecks, r.TornReads)
	}
	if r.Enters > 0 || r.EntersRefused > 0 {
		fmt.Fprintf(&b, "; permit holders in %d (refused %d, at most %d at once, beyond the limit %d)", r.Enters, r.EntersRefused, r.MaxIn, r.Overfull)
	}
	if r.LeaderReads > 0 || r.Observed > 0 {
		fmt.Fprintf(&b, "; leader reads %d, observed %d", r.LeaderReads, r.Observed)
	}
	for i, v := range r.Violations {
		if i == 10 {
			fmt.Fprintf(&b, "\n  ... and %d more violations", len(r.Violations)-i)
			break
		}
		fmt.Fprintf(&b, "\n  VIOLATION: %s", v)
	}
	for _, v := range r.Unsafe {
		fmt.Fprintf(&b, "\n  UNSAFE: %s", v)
	}
	if r.Dir != "" {
		fmt.Fprintf(&b, "\n  history saved in %s", r.Dir)
	}
	return b.String()
}

// Run is everything recorded in one scenario.
type Run struct {
	Name    string
	Ops     []Op
	Res     *Resource
	Acked   []int          // set elements whose write the client saw accepted
	Faults  map[string]int // faults injected, by type
	Timeout time.Duration  // for porcupine; 0 means 60 s
	// Model is the lock's model: LeaseModel (nil), RWModel or a
	// SemaphoreModel; ModelName names it in the saved history ("lease",
	// "rw", "semaphore/N"), for Replay.
	Model     *porcupine.NondeterministicModel
	ModelName string
	Leaders   []Observation // an election's leader reads
}

// Check checks r and, if anything is wrong, saves the history and the
// porcupine visualisation under outDir.
func Check(r Run, outDir string) *Report {
	rep := &Report{Name: r.Name, Ops: len(r.Ops), Faults: r.Faults}
	ops := closeOpen(r.Ops)

	// Tokens strictly increase in grant order: a grant that returned before
	// another was asked for has the smaller token.
	var grants []Op
	for _, op := range ops {
		if op.Kind == Acquire && op.Outcome == OK {
			grants = append(grants, op)
		}
	}
	rep.Grants = len(grants)
	byRet := slices.SortedFunc(slices.Values(grants), func(a, b Op) int { return cmp.Compare(a.Return, b.Return) })
	byCall := slices.SortedFunc(slices.Values(grants), func(a, b Op) int { return cmp.Compare(a.Call, b.Call) })
	var i int
	var best Op
	for _, g := range byCall {
		for ; i < len(byRet) && byRet[i].Return < g.Call; i++ {
			if byRet[i].Token > best.Token {
				best = byRet[i]
			}
		}
		if best.Token != 0 && g.Token <= best.Token {
			rep.Violations = append(rep.Violations, fmt.Sprintf("token %d (lease L%d of c%d) granted after token %d (L%d of c%d) had been granted",
				g.Token, g.Lease, g.Client, best.Token, best.Lease, best.Client))
		}
	}

	// Leader reads never go back to an older term.
	for _, o := range r.Leaders {
		if o.Stream {
			rep.Observed++
		} else {
			rep.LeaderReads++
		}
	}
	rep.Violations = append(rep.Violations, checkLeaders(ops, grants, r.Leaders)...)

	// The lease model.
	model := LeaseModel.ToModel()
	if r.Model != nil {
		model = r.Model.ToModel()
	}
	hist := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: op, Output: op, Call: op.Call, Return: op.Return})
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	res, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
	rep.Linearizable = res
	switch res {
	case porcupine.Illegal:
		rep.Violations = append(rep.Violations, "lock history is not explained by the lease model (see the visualisation)")
	case porcupine.Unknown:
		rep.Violations = append(rep.Violations, fmt.Sprintf("porcupine could not decide within %v", timeout))
	}

	// The resource.
	if r.Res != nil {
		counter, set, writes := r.Res.State()
		rep.Writes = len(writes)
		for _, w := range writes {
			switch {
			case w.Accepted && w.Stale:
				rep.StaleAccepted++
				rep.Accepted++
			case w.Accepted:
				rep.Accepted++
			default:
				rep.Refused++
			}
		}
		if rep.StaleAccepted > 0 {
			rep.Unsafe = append(rep.Unsafe, fmt.Sprintf("%d writes accepted with a stale token", rep.StaleAccepted))
		}
		rep.LostIncrements = rep.Accepted - counter
		if rep.LostIncrements != 0 {
			rep.Unsafe = append(rep.Unsafe, fmt.Sprintf("counter is %d after %d accepted increments", counter, rep.Accepted))
		}
		in := make(map[int]bool, len(set))
		for _, e := range set {
			in[e] = true
		}
		for _, e := range r.Acked {
			if !in[e] {
				rep.LostElements++
			}
		}
		if rep.LostElements > 0 {
			rep.Unsafe = append(rep.Unsafe, fmt.Sprintf("%d acknowledged set elements missing", rep.LostElements))
		}
		sh := r.Res.sharedState()
		rep.Rechecks, rep.TornReads = sh.rechecks, len(sh.torn)
		rep.Enters, rep.EntersRefused, rep.MaxIn, rep.Overfull = sh.enters, sh.enterRef, sh.maxIn, len(sh.overfull)
		rep.Unsafe = append(rep.Unsafe, first(sh.torn, 5)...)
		rep.Unsafe = append(rep.Unsafe, first(sh.overfull, 5)...)
		if n := len(sh.torn) + len(sh.overfull); n > 10 {
			rep.Unsafe = append(rep.Unsafe, fmt.Sprintf("... %d torn reads and %d holders beyond the limit in all", len(sh.torn), len(sh.overfull)))
		}
	}

	if !rep.Safe() && outDir != "" {
		rep.Dir = save(r, rep, model, info, outDir)
	}
	return rep
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// closeOpen gives operations that never returned a return time after
// everything else, so porcupine treats them as concurrent with the rest.
func closeOpen(ops []Op) []Op {
	var last int64
	for _, op := range ops {
		last = max(last, op.Call, op.Return)
	}
	out := slices.Clone(ops)
	for i := range out {
		if out[i].Return == 0 {
			out[i].Return = last + 1
			if out[i].Outcome == OK || out[i].Outcome == "" {
				out[i].Outcome = Unknown
			}
		}
	}
	return out
}

func save(r Run, rep *Report, model porcupine.Model, info porcupine.LinearizationInfo, outDir string) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(r.Name)
	dir := filepath.Join(outDir, fmt.Sprintf("%s-%s", name, time.Now().Format("20060102-150405.000")))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "(not saved: " + err.Error() + ")"
	}
	var writes []Write
	if r.Res != nil {
		_, _, writes = r.Res.State()
	}
	b, _ := json.MarshalIndent(struct {
		Report  *Report
		Ops     []Op
		Writes  []Write
		Acked   []int
		Leaders []Observation `json:",omitempty"`
		Model   string        `json:",omitempty"`
	}{rep, r.Ops, writes, r.Acked, r.Leaders, r.ModelName}, "", " ")
	_ = os.WriteFile(filepath.Join(dir, "history.json"), b, 0o644)
	_ = porcupine.VisualizePath(model, info, filepath.Join(dir, "lease-model.html"))
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	return abs
}
