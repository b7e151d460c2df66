package safety

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/safety/internal/check"
)

// scriptLock is a driver.Lock whose Release answers from a script.
type scriptLock struct{ releases []error }

func (s *scriptLock) Token() uint64                                  { return 1 }
func (s *scriptLock) Renew(context.Context) (driver.Validity, error) { return driver.Validity{}, nil }
func (s *scriptLock) Lost() <-chan struct{}                          { return nil }
func (s *scriptLock) Release(context.Context) error {
	err := s.releases[0]
	s.releases = s.releases[1:]
	return err
}

// opLog is a recorder that keeps what it is told.
type opLog struct {
	mu  sync.Mutex
	n   int
	ops []check.Op
}

func (o *opLog) Begin(check.Op) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n++
	return o.n
}

func (o *opLog) End(_ int, op check.Op) {
	o.mu.Lock()
	o.ops = append(o.ops, op)
	o.mu.Unlock()
}

// TestReleaseAnsweredByAnEarlierAttempt: a holder's first Release gets no
// answer; the driver deletes the key in the background (etcdlock's orphan
// reaper), the engine grants the lock to the next client, and the holder's
// repeated Release then answers nil at once: the key is deleted. Seen in
// the full safety run of etcd (rwmutex/server-restart,
// rwmutex/isolate-leader, election/isolate-leader): recorded within the
// repeat's own call, the release came after the other grant, and the lease
// model called the history illegal. The release took effect after the
// first attempt began; recorded so, the history is legal. A release whose
// attempts all began after the other grant stays illegal.
func TestReleaseAnsweredByAnEarlierAttempt(t *testing.T) {
	ttl := int64(time.Second)
	run := func(grantBefore bool) (porcupine.CheckResult, []check.Op) {
		log := &opLog{}
		d := &recDriver{client: 1, rec: log}
		l := &recLock{d: d, lease: 1, stop: make(chan struct{}),
			inner: &scriptLock{releases: []error{errors.New("no answer within 2s"), nil}}}
		// c1 was granted L1 two TTLs ago and has not renewed since: the
		// engine may have dropped it (and the model may let c2 take it).
		t0 := check.Now() - 2*ttl
		acq := check.Op{Client: 1, Lease: 1, Kind: check.Acquire, TTL: ttl, Call: t0, Return: t0 + 1, Token: 1, Outcome: check.OK}
		grant := check.Op{Client: 2, Lease: 2, Kind: check.Acquire, TTL: ttl, Call: t0 + 2, Token: 2, Outcome: check.OK}
		if grantBefore {
			grant.Return = check.Now()
		}
		if err := l.Release(context.Background()); err == nil {
			t.Fatal("first release: want the scripted error")
		}
		if !grantBefore {
			grant.Return = check.Now()
		}
		if err := l.Release(context.Background()); err != nil {
			t.Fatalf("second release: %v", err)
		}
		ops := append([]check.Op{acq, grant}, log.ops...)
		return check.Check(check.Run{Name: "release", Ops: ops}, "").Linearizable, log.ops
	}

	res, ops := run(false)
	if len(ops) != 2 || ops[0].Outcome != check.Unknown || ops[1].Outcome != check.OK {
		t.Fatalf("recorded %+v: want an unknown release and an ok one", ops)
	}
	if ops[1].Call != ops[0].Call {
		t.Errorf("the ok release is recorded from %d, the first attempt began at %d", ops[1].Call, ops[0].Call)
	}
	if res != porcupine.Ok {
		t.Errorf("c2 granted between c1's failed release and its repeat that answered ok: lease model %s, want Ok", res)
	}
	if res, _ := run(true); res != porcupine.Illegal {
		t.Errorf("c2 granted (c1's lock expired) before c1 first asked to release, c1's release then ok: lease model %s, want Illegal", res)
	}
}
