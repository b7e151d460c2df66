package check

import (
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

func racq(c int, lease int64, call, ret int64, tok uint64) Op {
	op := acq(c, lease, call, ret, tok)
	op.Shared = true
	return op
}

func TestRWHistories(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		safe bool
		want string
	}{
		{"readers share", []Op{racq(1, 1, 0, 5, 1), racq(2, 2, 1, 6, 2), rel(1, 1, 10, 11, OK), rel(2, 2, 10, 12, OK)}, true, ""},
		{"writer after readers", []Op{racq(1, 1, 0, 5, 1), racq(2, 2, 1, 6, 2), rel(1, 1, 10, 11, OK), rel(2, 2, 10, 12, OK), acq(3, 3, 2, 13, 3)}, true, ""},
		{"reader beside unexpired writer", []Op{acq(1, 1, 0, 5, 1), racq(2, 2, 6, 10, 2), rel(1, 1, 20, 21, OK)}, false, "lease model"},
		{"writer beside unexpired reader", []Op{racq(1, 1, 0, 5, 1), acq(2, 2, 6, 10, 2), rel(1, 1, 20, 21, OK)}, false, "lease model"},
		{"two writers", []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 6, 10, 2)}, false, "lease model"},
		{"reader after writer's expiry", []Op{acq(1, 1, 0, 5, 1), racq(2, 2, 50, 150, 2), rel(1, 1, 160, 161, Refused)}, true, ""},
		{"expired writer releases after a reader", []Op{acq(1, 1, 0, 5, 1), racq(2, 2, 50, 150, 2), rel(1, 1, 160, 161, OK)}, false, "lease model"},
		{"renewed reader keeps the writer out", []Op{racq(1, 1, 0, 5, 1), {Client: 1, Lease: 1, Kind: Renew, Call: 60, Return: 61, TTL: ttl, Outcome: OK}, acq(2, 2, 70, 150, 2)}, false, "lease model"},
		{"token order across modes", []Op{racq(1, 1, 0, 5, 4), racq(2, 2, 6, 7, 3)}, false, "granted after token 4"},
		{"crashed reader frees", []Op{racq(1, 1, 0, 5, 1), {Client: 1, Kind: Crash, Call: 10, Return: 11}, acq(2, 2, 12, 13, 2)}, true, ""},
		{"unknown writer may hold", []Op{{Client: 1, Lease: 1, Kind: Acquire, Call: 0, TTL: ttl}, racq(2, 2, 10, 200, 2)}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(Run{Name: tc.name, Ops: tc.ops, Model: &RWModel}, "")
			if rep.Safe() != tc.safe {
				t.Fatalf("safe = %v, want %v: %v", rep.Safe(), tc.safe, rep)
			}
			if tc.want != "" && !strings.Contains(strings.Join(rep.Violations, "\n"), tc.want) {
				t.Fatalf("violations %q do not mention %q", rep.Violations, tc.want)
			}
		})
	}
}

func TestSemaphoreHistories(t *testing.T) {
	three := []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 1, 6, 2), acq(3, 3, 7, 9, 3)}
	tests := []struct {
		name string
		n    int
		ops  []Op
		safe bool
	}{
		{"n holders", 2, []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 1, 6, 2), rel(1, 1, 10, 11, OK), acq(3, 3, 7, 12, 3)}, true},
		{"n+1 holders", 2, three, false},
		{"n+1 holders, n = 3", 3, three, true},
		{"a permit back after expiry", 2, []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 1, 6, 2), acq(3, 3, 50, 150, 3), rel(2, 2, 160, 161, Refused), rel(3, 3, 170, 171, OK)}, true},
		{"both expired holders renew", 2, []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 1, 6, 2), acq(3, 3, 50, 150, 3),
			{Client: 1, Lease: 1, Kind: Renew, Call: 160, Return: 161, TTL: ttl, Outcome: OK},
			{Client: 2, Lease: 2, Kind: Renew, Call: 160, Return: 162, TTL: ttl, Outcome: OK}}, false},
		{"token goes back", 2, []Op{acq(1, 1, 0, 5, 2), acq(2, 2, 6, 7, 1)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := SemaphoreModel(tc.n)
			rep := Check(Run{Name: tc.name, Ops: tc.ops, Model: &m}, "")
			if rep.Safe() != tc.safe {
				t.Fatalf("safe = %v, want %v: %v", rep.Safe(), tc.safe, rep)
			}
		})
	}
	// The model itself, without the token check: 3 holders of 2 permits.
	m := SemaphoreModel(2)
	var hist []porcupine.Operation
	for _, op := range three {
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: op, Output: op, Call: op.Call, Return: op.Return})
	}
	if porcupine.CheckOperations(m.ToModel(), hist) {
		t.Error("the semaphore model accepts 3 holders of 2 permits")
	}
}

func TestLeaders(t *testing.T) {
	grants := []Op{acq(1, 1, 0, 5, 3), acq(2, 2, 20, 25, 7)}
	tests := []struct {
		name string
		obs  []Observation
		want string
	}{
		{"monotonic", []Observation{{Client: 3, Call: 6, Return: 8, Term: 3}, {Client: 3, Call: 26, Return: 27, Term: 7}, {Client: 4, Call: 28, Return: 29}}, ""},
		{"term goes back", []Observation{{Client: 3, Call: 26, Return: 27, Term: 3}}, "read leader term 3 after term 7"},
		{"behind another read", []Observation{{Client: 3, Call: 10, Return: 12, Term: 9}, {Client: 4, Call: 13, Return: 14, Term: 7}}, "after term 9 had been read by c3"},
		{"concurrent reads may differ", []Observation{{Client: 3, Call: 10, Return: 12, Term: 9}, {Client: 4, Call: 11, Return: 14, Term: 7}}, ""},
		{"leader reads itself", []Observation{{Client: 2, Call: 26, Return: 27, Term: 7, Value: "a", WantTerm: 7, WantValue: "b"}}, `value "b"`},
		{"stream", []Observation{{Client: 3, Call: 1, Return: 1, Term: 3, Stream: true}, {Client: 3, Call: 30, Return: 30, Term: 3, Stream: true}, {Client: 3, Call: 31, Return: 31, Stream: true}, {Client: 3, Call: 32, Return: 32, Term: 7, Stream: true}}, ""},
		{"stream goes back", []Observation{{Client: 3, Call: 1, Return: 1, Term: 7, Stream: true}, {Client: 3, Call: 2, Return: 2, Term: 3, Stream: true}}, "observed leader term 3 after term 7"},
		{"leader reads itself after its lease", []Observation{{Client: 2, Call: 126, Return: 127, Term: 7, Value: "a", WantTerm: 7, WantValue: "b"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := strings.Join(checkLeaders(grants, grants, tc.obs), "\n")
			if (tc.want == "") != (v == "") || !strings.Contains(v, tc.want) {
				t.Fatalf("violations %q, want %q", v, tc.want)
			}
		})
	}
}

func TestSharedResource(t *testing.T) {
	for _, fenced := range []bool{true, false} {
		r := NewResource(fenced)
		r.Read(1, 5) // a reader
		c, s, _ := r.Read(2, 6)
		r.Write(2, 6, c+1, append(s, 1), 1) // a writer beside it
		ok := r.Recheck(1, 5)
		rep := Check(Run{Name: "rw", Res: r, Acked: []int{1}}, "")
		if fenced && (ok || !rep.Safe()) {
			t.Errorf("fenced: recheck %v: %v", ok, rep)
		}
		if !fenced && rep.TornReads != 1 {
			t.Errorf("unfenced: %v", rep)
		}

		r = NewResource(fenced)
		r.SetLimit(2)
		for tok := uint64(1); tok <= 3; tok++ {
			r.Enter(int(tok), tok)
		}
		r.Leave(1)
		rep = Check(Run{Name: "sem", Res: r}, "")
		if fenced && (!rep.Safe() || rep.EntersRefused != 1 || rep.MaxIn != 2) {
			t.Errorf("fenced: %v", rep)
		}
		if !fenced && (rep.Overfull != 1 || rep.MaxIn != 3) {
			t.Errorf("unfenced: %v", rep)
		}
	}
}
