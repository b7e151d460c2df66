package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const ttl = 100

func acq(c int, lease int64, call, ret int64, tok uint64) Op {
	return Op{Client: c, Lease: lease, Kind: Acquire, Call: call, Return: ret, TTL: ttl, Token: tok, Outcome: OK}
}

func rel(c int, lease int64, call, ret int64, out Outcome) Op {
	return Op{Client: c, Lease: lease, Kind: Release, Call: call, Return: ret, Outcome: out}
}

func TestHistories(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		safe bool
		want string // in the violations
	}{
		{"handoff", []Op{acq(1, 1, 0, 5, 1), rel(1, 1, 10, 12, OK), acq(2, 2, 3, 13, 2), rel(2, 2, 20, 21, OK)}, true, ""},
		{"overlap", []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 6, 10, 2), rel(1, 1, 20, 21, OK)}, false, "lease model"},
		{"expiry allows next", []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 50, 150, 2), rel(1, 1, 160, 161, Refused)}, true, ""},
		{"renewal keeps it", []Op{acq(1, 1, 0, 5, 1), {Client: 1, Lease: 1, Kind: Renew, Call: 60, Return: 61, TTL: ttl, Outcome: OK}, acq(2, 2, 70, 150, 2)}, false, "lease model"},
		{"stale release succeeds", []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 50, 150, 2), rel(1, 1, 160, 161, OK)}, false, "lease model"},
		{"token goes back", []Op{acq(1, 1, 0, 5, 7), rel(1, 1, 6, 7, OK), acq(2, 2, 8, 9, 3)}, false, "granted after token 7"},
		{"unknown acquire may hold", []Op{{Client: 1, Lease: 1, Kind: Acquire, Call: 0, TTL: ttl}, acq(2, 2, 10, 200, 2)}, true, ""},
		{"crash frees", []Op{acq(1, 1, 0, 5, 1), {Client: 1, Kind: Crash, Call: 10, Return: 11}, acq(2, 2, 12, 13, 2)}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := Check(Run{Name: tc.name, Ops: tc.ops}, "")
			if rep.Safe() != tc.safe {
				t.Fatalf("safe = %v, want %v: %v", rep.Safe(), tc.safe, rep)
			}
			if tc.want != "" && !strings.Contains(strings.Join(rep.Violations, "\n"), tc.want) {
				t.Fatalf("violations %q do not mention %q", rep.Violations, tc.want)
			}
		})
	}
}

func TestResource(t *testing.T) {
	for _, fenced := range []bool{true, false} {
		r := NewResource(fenced)
		// Holder 1 reads, holder 2 (newer) reads and writes, holder 1 writes late.
		c1, s1, _ := r.Read(1, 1)
		c2, s2, _ := r.Read(2, 2)
		ok2 := r.Write(2, 2, c2+1, append(s2, 20), 20)
		ok1 := r.Write(1, 1, c1+1, append(s1, 10), 10)
		var acked []int
		if ok2 {
			acked = append(acked, 20)
		}
		if ok1 {
			acked = append(acked, 10)
		}
		rep := Check(Run{Name: "resource", Res: r, Acked: acked}, "")
		if fenced && (!rep.Safe() || rep.Refused != 1) {
			t.Errorf("fenced: %v", rep)
		}
		if !fenced && (rep.StaleAccepted != 1 || rep.LostIncrements != 1 || rep.LostElements != 1) {
			t.Errorf("unfenced: %v", rep)
		}
	}
}

func TestSavesOnFailure(t *testing.T) {
	dir := t.TempDir()
	rep := Check(Run{Name: "x/y", Ops: []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 6, 10, 2)}}, dir)
	if rep.Dir == "" {
		t.Fatal("nothing saved")
	}
	for _, f := range []string{"history.json", "lease-model.html"} {
		if _, err := os.Stat(filepath.Join(rep.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}
