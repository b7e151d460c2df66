package check

import (
	"flag"
	"path/filepath"
	"testing"
	"time"
)

var replay = flag.String("check.replay", "", "a saved history.json to check again (go test -run TestReplay ./safety/internal/check -args -check.replay=PATH)")

// TestReplay checks a saved history again, with a 10-minute timeout.
func TestReplay(t *testing.T) {
	if *replay == "" {
		t.Skip("no -check.replay")
	}
	start := time.Now()
	rep, err := Replay(*replay, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v (checked in %v)", rep, time.Since(start).Round(time.Millisecond))
}

func TestReplaySaved(t *testing.T) {
	dir := t.TempDir()
	m := SemaphoreModel(2)
	ops := []Op{acq(1, 1, 0, 5, 1), acq(2, 2, 1, 6, 2), acq(3, 3, 7, 9, 3)}
	rep := Check(Run{Name: "sem", Ops: ops, Model: &m, ModelName: "semaphore/2"}, dir)
	if rep.Dir == "" {
		t.Fatal("nothing saved")
	}
	again, err := Replay(filepath.Join(rep.Dir, "history.json"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if again.Safe() || again.Linearizable != rep.Linearizable {
		t.Fatalf("replay: %v; first check: %v", again, rep)
	}
	// The same history is fine with 3 permits.
	m3 := SemaphoreModel(3)
	if rep := Check(Run{Name: "sem", Ops: ops, Model: &m3}, ""); !rep.Safe() {
		t.Fatal(rep)
	}
}
