// Package drivertest is the conformance suite every dlock driver passes.
//
// A driver's test builds a Harness, which makes new driver connections to a
// real engine, and calls RunConformanceTests. Optional interfaces on the
// harness (LossForcer, Crasher, ShortTTLer, Faulter) enable the tests that
// need the engine's cooperation; tests a harness cannot support are skipped with a
// message that says so.
package drivertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// Harness connects the suite to one engine.
type Harness interface {
	// MakeDriver returns a new driver with a connection of its own, as a
	// separate process would have.
	MakeDriver(ctx context.Context) (driver.Driver, error)
	// Close releases what the harness holds.
	Close()
}

// HarnessMaker makes a harness for one test.
type HarnessMaker func(ctx context.Context, t *testing.T) (Harness, error)

// LossForcer is implemented by harnesses that can make the engine drop a
// held lock, as an operator deleting it or the engine losing it would.
type LossForcer interface {
	ForceLoss(ctx context.Context, name string) error
}

// ManyLockser is implemented by harnesses whose engine cannot be asked for
// ManyLocks locks at once (a server capped at short sessions, say): the
// ManyLocks test then holds ManyLocks() of them.
type ManyLockser interface {
	ManyLocks() int
}

// SessionLoss is implemented by LossForcer harnesses whose ForceLoss ends
// the holder's whole session (pg_terminate_backend), and with it every
// lock the holder's client keeps on that session, not only the one named.
type SessionLoss interface {
	LossEndsSession() bool
}

// Crasher is implemented by harnesses that can cut a driver off from the
// engine without releasing anything: a partition, or a dead process.
type Crasher interface {
	// Crash cuts d off. It reports whether the engine frees d's locks at
	// once (a kernel releasing a dead process's file lock) rather than when
	// their TTL runs out.
	Crash(ctx context.Context, d driver.Driver) (freedAtOnce bool, err error)
}

// ShortTTLer is implemented by harnesses whose engine needs a TTL other than
// DefaultShortTTL for the expiry tests (etcd leases count whole seconds).
type ShortTTLer interface {
	ShortTTL() time.Duration
}

// DefaultShortTTL is the TTL used by tests that wait for an expiry.
const DefaultShortTTL = time.Second

// RunConformanceTests runs the whole suite against the engine behind
// newHarness.
func RunConformanceTests(t *testing.T, newHarness HarnessMaker) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"MutualExclusion", testMutualExclusion},
		{"TokensIncrease", testTokensIncrease},
		{"TryLock", testTryLock},
		{"CancelWhileWaiting", testCancelWhileWaiting},
		{"DoubleUnlock", testDoubleUnlock},
		{"LossDetection", testLossDetection},
		{"VanishedHolder", testVanishedHolder},
		{"RenewalKeepsLock", testRenewalKeepsLock},
		{"EventDrivenHandoff", testEventDrivenHandoff},
		{"CloseWhileWaiting", testCloseWhileWaiting},
		{"BadInput", testBadInput},
		{"Names", testNames},
		{"Do", testDo},
		{"ReleaseFailureFreesTheLock", testReleaseFailureFreesTheLock},
		{"CancelledWaitCleanupFails", testCancelledWaitCleanupFails},
		{"UnlockWithEngineDown", testUnlockWithEngineDown},
		{"CloseWithEngineDown", testCloseWithEngineDown},
		{"LockAcrossOutage", testLockAcrossOutage},
		{"NoOverlapUnderFaults", testNoOverlapUnderFaults},
		{"ConnectionReset", testConnectionReset},
		{"NotSupported", testNotSupported},
		{"RW/ReadersShare", testReadersShare},
		{"RW/WriterExcludesReaders", testWriterExcludesReaders},
		{"RW/NoWriterStarvation", testNoWriterStarvation},
		{"RW/CancelledWriterFreesReaders", testCancelledWriterFreesReaders},
		{"RW/Exclusion", testRWExclusion},
		{"RW/ReaderLoss", testReaderLoss},
		{"RW/VanishedReader", testVanishedReader},
		{"Semaphore/Limit", testSemaphoreLimit},
		{"Semaphore/Exclusion", testSemaphoreExclusion},
		{"Semaphore/Mismatch", testSemaphoreMismatch},
		{"Semaphore/CancelledWait", testSemaphoreCancelledWait},
		{"Semaphore/VanishedHolder", testVanishedPermitHolder},
		{"Election/Leader", testElectionLeader},
		{"Election/MutexContends", testElectionMutexContends},
		{"Election/Observe", testElectionObserve},
		{"Election/ObserveLatest", testElectionObserveLatest},
		{"Election/ObserveEndsWithClient", testElectionObserveEndsWithClient},
		{"Election/LostLeadership", testElectionLostLeadership},
		{"Election/VanishedLeader", testElectionVanishedLeader},
		{"Election/CancelledCampaign", testElectionCancelledCampaign},
		{"List", testList},
		{"ManyLocks", testManyLocks},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			h, err := newHarness(ctx, t)
			if err != nil {
				t.Fatalf("making harness: %v", err)
			}
			t.Cleanup(h.Close)
			tc.fn(t, &suite{h: h, ctx: ctx})
		})
	}
}

type suite struct {
	h   Harness
	ctx context.Context
}

func (s *suite) shortTTL() time.Duration {
	if st, ok := s.h.(ShortTTLer); ok {
		return st.ShortTTL()
	}
	return DefaultShortTTL
}

// client returns a client with a connection of its own, closed at cleanup.
func (s *suite) client(t *testing.T, opts ...dlock.Option) (*dlock.Client, driver.Driver) {
	t.Helper()
	d, err := s.h.MakeDriver(s.ctx)
	if err != nil {
		t.Fatalf("MakeDriver: %v", err)
	}
	c, err := dlock.NewClient(d, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, dlock.ErrClosed) {
			t.Logf("closing client: %v", err)
		}
	})
	return c, d
}

// lockName returns a name no other test (or earlier run) uses.
func lockName(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "dlocktest/" + t.Name() + "/" + hex.EncodeToString(b)
}

func (s *suite) lock(t *testing.T, c *dlock.Client, name string, opts ...dlock.Option) *dlock.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	l, err := c.Mutex(name, opts...).Lock(ctx)
	if err != nil {
		t.Fatalf("Lock(%q): %v", name, err)
	}
	return l
}

func unlock(t *testing.T, l *dlock.Lease) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Unlock(ctx); err != nil {
		t.Fatalf("Unlock(%q): %v", l.Name(), err)
	}
}

type result struct {
	l   *dlock.Lease
	err error
	at  time.Time
}

// lockAsync starts a Lock and returns where its result will arrive.
func (s *suite) lockAsync(ctx context.Context, c *dlock.Client, name string, opts ...dlock.Option) <-chan result {
	ch := make(chan result, 1)
	go func() {
		l, err := c.Mutex(name, opts...).Lock(ctx)
		ch <- result{l, err, time.Now()}
	}()
	return ch
}

func await(t *testing.T, ch <-chan result, within time.Duration, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("%s: no result within %v", what, within)
	}
	panic("unreachable")
}

// waitQueued waits until n waiters are queued on name, where the engine can
// tell; otherwise it gives the waiters a moment to reach their wait (there
// is no event to wait for: the tests are correct however the race goes).
func waitQueued(t *testing.T, c *dlock.Client, name string, n int) {
	t.Helper()
	if _, ok := c.Driver().(driver.Inspector); ok {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			st, err := c.Status(context.Background(), name)
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if st.Waiters < 0 {
				break
			}
			if st.Waiters >= n {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		if st, _ := c.Status(context.Background(), name); st.Waiters >= 0 {
			t.Fatalf("waiters on %q: %d, want %d", name, st.Waiters, n)
		}
	}
	time.Sleep(100 * time.Millisecond)
}

func mustBeDone(t *testing.T, l *dlock.Lease, within time.Duration, want error) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(within):
		t.Fatalf("lease %q: Done not closed within %v", l.Name(), within)
	}
	if !errors.Is(l.Err(), want) {
		t.Fatalf("lease %q: Err() = %v, want %v", l.Name(), l.Err(), want)
	}
	if l.Context().Err() == nil {
		t.Fatalf("lease %q: Context not cancelled after Done", l.Name())
	}
}

func mustHold(t *testing.T, l *dlock.Lease) {
	t.Helper()
	select {
	case <-l.Done():
		t.Fatalf("lease %q ended unexpectedly: %v", l.Name(), l.Err())
	default:
	}
	if err := l.Err(); err != nil {
		t.Fatalf("lease %q: Err() = %v, want nil", l.Name(), err)
	}
}

func (s *suite) mustNotAcquire(t *testing.T, c *dlock.Client, name string) {
	t.Helper()
	l, err := c.Mutex(name).TryLock(s.ctx)
	if err == nil {
		l.Unlock(context.Background())
		t.Fatalf("TryLock(%q) succeeded while the lock was held elsewhere", name)
	}
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryLock(%q) = %v, want ErrNotAcquired", name, err)
	}
}
