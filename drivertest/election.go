package drivertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// The election suite. It runs when the driver's Capabilities offer
// elections; otherwise NotSupported checks the refusal.

func (s *suite) needsElection(t *testing.T, c *dlock.Client) {
	t.Helper()
	if !c.Capabilities().Election {
		t.Skip("the driver does not offer elections (Capabilities); NotSupported checks its refusal")
	}
}

func (s *suite) campaign(t *testing.T, c *dlock.Client, name, value string) *dlock.Leadership {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	l, err := c.Election(name).Campaign(ctx, value)
	if err != nil {
		t.Fatalf("Campaign(%q): %v", value, err)
	}
	return l
}

func campaignAsync(ctx context.Context, c *dlock.Client, name, value string) <-chan result {
	return async(ctx, func(ctx context.Context) (*dlock.Lease, error) {
		l, err := c.Election(name).Campaign(ctx, value)
		if err != nil {
			return nil, err
		}
		return l.Lease, nil
	})
}

func (s *suite) mustLead(t *testing.T, c *dlock.Client, name string, want dlock.Leader) {
	t.Helper()
	got, err := c.Election(name).Leader(s.ctx)
	if err != nil {
		t.Fatalf("Leader: %v", err)
	}
	if got != want {
		t.Fatalf("Leader = %+v, want %+v", got, want)
	}
}

// testElectionLeader: one leader at a time, its value and term as
// Leader reports them, Proclaim, Resign, and the next candidate's larger
// term.
func testElectionLeader(t *testing.T, s *suite) {
	a, _ := s.client(t)
	s.needsElection(t, a)
	b, _ := s.client(t)
	name := lockName(t)
	s.mustLead(t, b, name, dlock.Leader{})
	la := s.campaign(t, a, name, "a")
	s.mustLead(t, b, name, dlock.Leader{Value: "a", Term: la.Term()})
	l, err := b.Election(name).TryCampaign(s.ctx, "b")
	mustNotAcquire(t, "TryCampaign while a leads", leaseOf(l), err)
	ch := campaignAsync(s.ctx, b, name, "b")
	waitQueued(t, a, name, 1)
	stillWaiting(t, ch, "Campaign while a leads")
	if err := la.Proclaim(s.ctx, "a2"); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	s.mustLead(t, b, name, dlock.Leader{Value: "a2", Term: la.Term()})
	if err := la.Resign(s.ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	lb := granted(t, ch, "Campaign after the leader resigned")
	if lb.Token() <= la.Term() {
		t.Errorf("term %d after term %d", lb.Token(), la.Term())
	}
	s.mustLead(t, a, name, dlock.Leader{Value: "b", Term: lb.Token()})
	if err := la.Proclaim(s.ctx, "a3"); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Proclaim after Resign = %v, want ErrNotHeld", err)
	}
	s.mustLead(t, a, name, dlock.Leader{Value: "b", Term: lb.Token()})
	unlock(t, lb)
	s.mustLead(t, a, name, dlock.Leader{})
}

// testElectionMutexContends: leadership is the exclusive lock of the name,
// so a Mutex of the same name and a campaign exclude each other both ways,
// and the terms and tokens of the two go up together.
func testElectionMutexContends(t *testing.T, s *suite) {
	a, _ := s.client(t)
	s.needsElection(t, a)
	b, _ := s.client(t)
	name := lockName(t)

	m := s.lock(t, a, name)
	l, err := b.Election(name).TryCampaign(s.ctx, "b")
	mustNotAcquire(t, "TryCampaign while a Mutex of the name is held", leaseOf(l), err)
	ch := campaignAsync(s.ctx, b, name, "b")
	waitQueued(t, a, name, 1)
	stillWaiting(t, ch, "Campaign while a Mutex of the name is held")
	unlock(t, m)
	lb := granted(t, ch, "Campaign after the Mutex's Unlock")
	if lb.Token() <= m.Token() {
		t.Errorf("term %d after the Mutex's token %d", lb.Token(), m.Token())
	}

	ml, err := a.Mutex(name).TryLock(s.ctx)
	mustNotAcquire(t, "TryLock while a leader leads", ml, err)
	mch := s.lockAsync(s.ctx, a, name)
	waitQueued(t, b, name, 1)
	stillWaiting(t, mch, "Lock while a leader leads")
	unlock(t, lb)
	m2 := granted(t, mch, "Lock after the leader resigned")
	if m2.Token() <= lb.Token() {
		t.Errorf("token %d after term %d", m2.Token(), lb.Token())
	}
	unlock(t, m2)
}

func leaseOf(l *dlock.Leadership) *dlock.Lease {
	if l == nil {
		return nil
	}
	return l.Lease
}

// observed reads ch until it receives want, checking on the way that the
// terms never decrease and that every leader received is one that was
// elected (known maps each term to the values its leader had).
func observed(t *testing.T, ch <-chan dlock.Leader, want dlock.Leader, last *uint64, known map[uint64][]string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("Observe's channel closed while waiting for %+v", want)
			}
			if got.Term != 0 {
				if got.Term < *last {
					t.Errorf("observed term %d after term %d", got.Term, *last)
				}
				*last = got.Term
				vals, ok := known[got.Term]
				if !ok {
					t.Errorf("observed %+v: no such leader was elected", got)
				} else if !contains(vals, got.Value) {
					t.Errorf("observed %+v: the leader of term %d had the values %q", got, got.Term, vals)
				}
			}
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("Observe: %+v not received within 10s", want)
		}
	}
}

func contains(vals []string, v string) bool {
	for _, x := range vals {
		if x == v {
			return true
		}
	}
	return false
}

// testElectionObserve: an observer sees nobody, each leader, each new
// value and nobody again, in order, and its channel closes with its
// context.
func testElectionObserve(t *testing.T, s *suite) {
	o, _ := s.client(t)
	s.needsElection(t, o)
	a, _ := s.client(t)
	b, _ := s.client(t)
	name := lockName(t)
	octx, ocancel := context.WithCancel(s.ctx)
	defer ocancel()
	ch, err := o.Election(name).Observe(octx)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	var last uint64
	known := map[uint64][]string{}
	observed(t, ch, dlock.Leader{}, &last, known)

	la := s.campaign(t, a, name, "a")
	known[la.Term()] = []string{"a"}
	observed(t, ch, dlock.Leader{Value: "a", Term: la.Term()}, &last, known)
	known[la.Term()] = append(known[la.Term()], "a2")
	if err := la.Proclaim(s.ctx, "a2"); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	observed(t, ch, dlock.Leader{Value: "a2", Term: la.Term()}, &last, known)

	chb := campaignAsync(s.ctx, b, name, "b")
	waitQueued(t, a, name, 1)
	// b's term is not known before it is granted: accept any term above
	// a's for "b" by learning it from the grant first.
	unlock(t, la.Lease)
	lb := granted(t, chb, "Campaign after the leader resigned")
	known[lb.Token()] = []string{"b"}
	observed(t, ch, dlock.Leader{Value: "b", Term: lb.Token()}, &last, known)
	unlock(t, lb)
	observed(t, ch, dlock.Leader{}, &last, known)

	ocancel()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("Observe's channel still open 5s after its context ended")
		}
	}
}

// testElectionObserveLatest: an observer that does not read while the
// leader changes its value many times and then resigns to another still
// receives, once it reads, the latest state — and nothing after it that
// is older.
func testElectionObserveLatest(t *testing.T, s *suite) {
	o, _ := s.client(t)
	s.needsElection(t, o)
	a, _ := s.client(t)
	b, _ := s.client(t)
	name := lockName(t)
	octx, ocancel := context.WithCancel(s.ctx)
	defer ocancel()
	ch, err := o.Election(name).Observe(octx)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	known := map[uint64][]string{}
	la := s.campaign(t, a, name, "a0")
	for i := range 20 {
		v := fmt.Sprint("a", i)
		known[la.Term()] = append(known[la.Term()], v)
		if i > 0 {
			if err := la.Proclaim(s.ctx, v); err != nil {
				t.Fatalf("Proclaim(%q): %v", v, err)
			}
		}
	}
	unlock(t, la.Lease)
	lb := s.campaign(t, b, name, "b")
	known[lb.Term()] = []string{"b", "b-final"}
	if err := lb.Proclaim(s.ctx, "b-final"); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	// Only now read: whatever came before, the latest state must arrive.
	var last uint64
	want := dlock.Leader{Value: "b-final", Term: lb.Term()}
	observed(t, ch, want, &last, known)
	// And nothing older after it.
	select {
	case got, ok := <-ch:
		if ok && got != want {
			t.Errorf("observed %+v after the latest state %+v", got, want)
		}
	case <-time.After(500 * time.Millisecond): // nothing more is the expected outcome
	}
	unlock(t, lb.Lease)
}

// testElectionObserveEndsWithClient: closing the client closes its
// observers' channels.
func testElectionObserveEndsWithClient(t *testing.T, s *suite) {
	o, _ := s.client(t)
	s.needsElection(t, o)
	ch, err := o.Election(lockName(t)).Observe(s.ctx)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	<-ch // the current leader (nobody)
	done := make(chan error, 1)
	go func() { done <- o.Close() }()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if ok {
				continue
			}
			if err := <-done; err != nil {
				t.Errorf("Close: %v", err)
			}
			return
		case <-timeout:
			t.Fatalf("Observe's channel still open 5s after Close")
		}
	}
}

// testElectionLostLeadership: a leader whose lock the engine drops learns
// it, and its Proclaim changes nothing.
func testElectionLostLeadership(t *testing.T, s *suite) {
	lf, ok := s.h.(LossForcer)
	if !ok {
		t.Skip("harness cannot make the engine drop a lock (no LossForcer)")
	}
	a, _ := s.client(t)
	s.needsElection(t, a)
	name := lockName(t)
	la := s.campaign(t, a, name, "a")
	if err := lf.ForceLoss(s.ctx, name); err != nil {
		t.Fatalf("ForceLoss: %v", err)
	}
	mustBeDone(t, la.Lease, 10*time.Second, dlock.ErrLockLost)
	if err := la.Proclaim(s.ctx, "zombie"); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Proclaim after the loss = %v, want ErrLockLost", err)
	}
	if got, err := a.Election(name).Leader(s.ctx); err != nil || got.Value == "zombie" {
		t.Errorf("Leader after a lost leader's Proclaim = %+v, %v", got, err)
	}
}

// testElectionVanishedLeader: a leader cut off from the engine is replaced
// within its TTL, after its own leadership has ended.
func testElectionVanishedLeader(t *testing.T, s *suite) {
	cr, ok := s.h.(Crasher)
	if !ok {
		t.Skip("harness cannot cut a client off (no Crasher)")
	}
	ttl := s.shortTTL()
	a, da := s.client(t, dlock.WithTTL(ttl))
	s.needsElection(t, a)
	b, _ := s.client(t, dlock.WithTTL(ttl))
	name := lockName(t)
	la := s.campaign(t, a, name, "a")
	ch := campaignAsync(s.ctx, b, name, "b")
	waitQueued(t, b, name, 1)
	next := s.afterCrash(t, cr, da, la.Lease, ch, ttl, "Campaign after the leader vanished")
	s.mustLead(t, b, name, dlock.Leader{Value: "b", Term: next.Token()})
	unlock(t, next)
}

// testElectionCancelledCampaign: a candidate that gives up leaves nothing
// that keeps the next one out.
func testElectionCancelledCampaign(t *testing.T, s *suite) {
	a, _ := s.client(t)
	s.needsElection(t, a)
	b, _ := s.client(t)
	c, _ := s.client(t)
	name := lockName(t)
	la := s.campaign(t, a, name, "a")
	bctx, bcancel := context.WithCancel(s.ctx)
	chb := campaignAsync(bctx, b, name, "b")
	waitQueued(t, a, name, 1)
	chc := campaignAsync(s.ctx, c, name, "c")
	waitQueued(t, a, name, 2)
	bcancel()
	if r := await(t, chb, 5*time.Second, "cancelled Campaign"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Campaign = %v, want context.Canceled", r.err)
	}
	unlock(t, la.Lease)
	lc := granted(t, chc, "Campaign behind a cancelled candidate")
	s.mustLead(t, a, name, dlock.Leader{Value: "c", Term: lc.Token()})
	unlock(t, lc)
}
