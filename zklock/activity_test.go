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
	a.beat(sess, t0, t0.Add(time.Millisecond))
	for i := range 1000 {
		sent := t0.Add(lag + time.Duration(i+1)*time.Microsecond)
		a.proved(sess, sent, sent.Add(time.Millisecond))
	}
	sent := t0.Add(lag + 2*time.Millisecond)
	got, ok := a.base(sess, sent, lag)
	if !ok || !got.Equal(t0) {
		t.Fatalf("base after a burst of proofs = %v, %v; want the heartbeat at %v", got, ok, t0)
	}
}

// A request counts from its send time only once its answer came back lag
// before the proof was sent: one sent long before but held up on the way
// (a stalled connection that flushed) may have reached the follower back
// to back with the proof, and the leader not have heard of it
// (TestStalledClientThenCutOff).
func TestActivityCountsAnsweredRequests(t *testing.T) {
	var a activity
	const sess, lag = 7, time.Second
	t0 := time.Now()
	a.beat(sess, t0, t0.Add(time.Millisecond))
	stalled := t0.Add(lag)
	flushed := t0.Add(3 * lag)
	a.beat(sess, stalled, flushed)
	sent := flushed.Add(-time.Millisecond) // sent during the stall, with the beat
	if got, ok := a.base(sess, sent, lag); !ok || !got.Equal(t0) {
		t.Fatalf("base of a proof sent with a stalled beat = %v, %v; want the last beat answered before the stall, sent at %v", got, ok, t0)
	}
	later := flushed.Add(lag)
	if got, ok := a.base(sess, later, lag); !ok || !got.Equal(stalled) {
		t.Fatalf("base of a proof sent lag after the stalled beat's answer = %v, %v; want that beat, sent at %v", got, ok, stalled)
	}
}
