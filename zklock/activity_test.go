package zklock

import (
	"testing"
	"time"
)

// A burst of proofs (a renewal or grant per held lock) must not push the
// heartbeat out of the record that the proofs' TTLs count from: at 1,000
// held locks each renewal's proof did, and every renewal failed with
// errStaleActivity (drivertest ManyLocks).
func TestActivityBurstKeepsHeartbeat(t *testing.T) {
	var a activity
	const sess, lag = 7, time.Second
	t0 := time.Now()
	a.beat(sess, t0)
	for i := range 1000 {
		a.proved(sess, t0.Add(lag+time.Duration(i+1)*time.Microsecond))
	}
	sent := t0.Add(lag + 2*time.Millisecond)
	got, ok := a.base(sess, sent, lag)
	if !ok || !got.Equal(t0) {
		t.Fatalf("base after a burst of proofs = %v, %v; want the heartbeat at %v", got, ok, t0)
	}
}
