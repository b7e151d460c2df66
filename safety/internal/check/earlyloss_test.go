package check

import (
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

func lost(c int, lease int64, at int64) Op {
	return Op{Client: c, Lease: lease, Kind: Lost, Call: at, Return: at, Outcome: OK}
}

// An engine that ends a lease early and tells its holder (a PostgreSQL
// session that ends) passes the early-loss models, and fails the plain
// ones, which promise the lease its whole time; a grant to anyone before
// the lost lease's time fails both.
func TestEarlyLoss(t *testing.T) {
	tests := []struct {
		name      string
		ops       []Op
		shared    bool // RW models rather than lease models
		earlySafe bool // under the early-loss model (the plain one: never safe here)
	}{
		{"lost early, next after its time",
			[]Op{acq(1, 1, 0, 5, 1), lost(1, 1, 20), rel(1, 1, 21, 22, Refused), acq(2, 2, 25, 110, 2)}, false, true},
		{"refused before lost, next after its time",
			[]Op{acq(1, 1, 0, 5, 1), rel(1, 1, 21, 22, Refused), lost(1, 1, 23), acq(2, 2, 25, 110, 2)}, false, true},
		{"lost early, next before its time",
			[]Op{acq(1, 1, 0, 5, 1), lost(1, 1, 20), acq(2, 2, 21, 30, 2)}, false, false},
		{"writer lost early, reader after its time",
			[]Op{acq(1, 1, 0, 5, 1), lost(1, 1, 20), racq(2, 2, 25, 110, 2)}, true, true},
		{"reader lost early, writer before its time",
			[]Op{racq(1, 1, 0, 5, 1), lost(1, 1, 20), acq(2, 2, 21, 30, 2)}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plain, early := &LeaseModel, &EarlyLossLeaseModel
			if tc.shared {
				plain, early = &RWModel, &EarlyLossRWModel
			}
			for _, m := range []struct {
				model *porcupine.NondeterministicModel
				safe  bool
			}{{plain, false}, {early, tc.earlySafe}} {
				rep := Check(Run{Name: tc.name, Ops: tc.ops, Model: m.model}, "")
				if rep.Safe() != m.safe {
					t.Fatalf("early-loss model %v: safe = %v, want %v: %v", m.model == early, rep.Safe(), m.safe, rep)
				}
				if !m.safe && !strings.Contains(strings.Join(rep.Violations, "\n"), "lease model") {
					t.Fatalf("violations %q do not mention the lease model", rep.Violations)
				}
			}
		})
	}
}
