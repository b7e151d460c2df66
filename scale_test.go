package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// manyDriver grants every request at once, for the TTL asked, and records
// when each renewal ran. Its locks report loss by a call
// (driver.LossNotifier) and it says it coalesces renewals if coalesce is
// set: what a driver does to let a client hold many locks cheaply.
type manyDriver struct {
	coalesce bool

	mu     sync.Mutex
	token  uint64
	renews []time.Time
	locks  []*manyLock
}

func (d *manyDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.token++
	l := &manyLock{d: d, token: d.token, ttl: req.TTL}
	d.locks = append(d.locks, l)
	return l, driver.Validity{Since: time.Now(), TTL: req.TTL}, nil
}

func (d *manyDriver) Close() error { return nil }

func (d *manyDriver) CoalescesRenewals() bool { return d.coalesce }

func (d *manyDriver) renewTimes() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.renews...)
}

type manyLock struct {
	d     *manyDriver
	token uint64
	ttl   time.Duration

	mu   sync.Mutex
	lost func()
}

func (l *manyLock) Token() uint64 { return l.token }

// Lost would cost the portable layer a goroutine per lock: a driver that
// implements NotifyLost still has to answer it.
func (l *manyLock) Lost() <-chan struct{} { return make(chan struct{}) }

func (l *manyLock) NotifyLost(f func()) {
	l.mu.Lock()
	l.lost = f
	l.mu.Unlock()
}

// lose is the engine reporting the lock gone; false if nobody asked to
// be told.
func (l *manyLock) lose() bool {
	l.mu.Lock()
	f := l.lost
	l.mu.Unlock()
	if f == nil {
		return false
	}
	f()
	return true
}

func (l *manyLock) Renew(ctx context.Context) (driver.Validity, error) {
	now := time.Now()
	l.d.mu.Lock()
	l.d.renews = append(l.d.renews, now)
	l.d.mu.Unlock()
	return driver.Validity{Since: now, TTL: l.ttl}, nil
}

func (l *manyLock) Release(ctx context.Context) error { return nil }

// TestLossNotifierCostsNoGoroutine: a client holding many locks of a
// driver that reports loss by a call spends no goroutine per lock, and the
// loss of one lock ends that lease only.
func TestLossNotifierCostsNoGoroutine(t *testing.T) {
	d := &manyDriver{}
	c, err := dlock.NewClient(d, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	const n = 500
	before := runtime.NumGoroutine()
	leases := make([]*dlock.Lease, n)
	for i := range leases {
		if leases[i], err = c.Mutex(fmt.Sprint("m", i)).Lock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if g := runtime.NumGoroutine() - before; g > 5 {
		t.Errorf("holding %d locks costs %d goroutines, want none per lock", n, g)
	}
	d.mu.Lock()
	victim := d.locks[n/2]
	d.mu.Unlock()
	if !victim.lose() {
		t.Fatal("the portable layer did not ask the lock to report its loss (NotifyLost)")
	}
	select {
	case <-leases[n/2].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the lost lock's lease is still open 10 s after the driver reported the loss")
	}
	for i, l := range leases {
		if i == n/2 {
			if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
				t.Errorf("lost lease's Err = %v, want ErrLockLost", err)
			}
			continue
		}
		if err := l.Err(); err != nil {
			t.Fatalf("lease %d ended with the loss of another: %v", i, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock: %v", err)
		}
	}
}

// TestCoalescedRenewalsComeTogether: for a driver that coalesces
// renewals, the renewals of leases taken at different times are scheduled
// on one grid (a quarter of the renewal interval), so that they reach the
// driver together; for other drivers each lease renews one interval after
// its last renewal.
func TestCoalescedRenewalsComeTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("short: holds leases through several renewals")
	}
	const ttl = 3 * time.Second // renewal every second, grid 250 ms
	const grid = ttl / 3 / 4
	for _, coalesce := range []bool{true, false} {
		name := "apart"
		if coalesce {
			name = "together"
		}
		t.Run(name, func(t *testing.T) {
			d := &manyDriver{coalesce: coalesce}
			c, err := dlock.NewClient(d, dlock.WithTTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			var leases []*dlock.Lease
			// Take the locks spread over one renewal interval.
			const n = 40
			for i := range n {
				l, err := c.Mutex(fmt.Sprint("r", i)).Lock(ctx)
				if err != nil {
					t.Fatal(err)
				}
				leases = append(leases, l)
				time.Sleep(ttl / 3 / n) // spreads the grants; nothing to wait for
			}
			// Wait for two rounds of renewals.
			deadline := time.Now().Add(10 * time.Second)
			for len(d.renewTimes()) < 2*n && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			times := d.renewTimes()
			if len(times) < 2*n {
				t.Fatalf("%d renewals in 10 s, want %d", len(times), 2*n)
			}
			// A renewal on the grid runs a little after a multiple of the
			// grid; count those more than half a grid after one.
			off := 0
			for _, at := range times {
				if at.Sub(at.Truncate(grid)) > grid/2 {
					off++
				}
			}
			t.Logf("%d of %d renewals more than %v after a multiple of %v", off, len(times), grid/2, grid)
			if coalesce && off > len(times)/10 {
				t.Errorf("%d of %d renewals off the grid: the renewals of a coalescing driver do not come together", off, len(times))
			}
			if !coalesce && off < len(times)/4 {
				t.Errorf("only %d of %d renewals off the grid: leases of a driver that does not coalesce renew on the grid", off, len(times))
			}
			for _, l := range leases {
				if err := l.Unlock(ctx); err != nil {
					t.Errorf("Unlock: %v", err)
				}
			}
		})
	}
}

// asyncDriver is manyDriver whose locks renew by a call
// (driver.AsyncRenewer) and whose engine answers the renewals only when
// the test says so.
type asyncDriver struct {
	manyDriver
	pending chan asyncRenewal // the unanswered renewals

	most atomic.Int64 // the most goroutines seen when a renewal started
}

func (d *asyncDriver) Acquire(ctx context.Context, req driver.Request) (driver.Lock, driver.Validity, error) {
	l, v, err := d.manyDriver.Acquire(ctx, req)
	return &asyncLock{manyLock: l.(*manyLock), d: d}, v, err
}

type asyncLock struct {
	*manyLock
	d *asyncDriver
}

func (l *asyncLock) Renew(context.Context) (driver.Validity, error) {
	panic("the portable layer called Renew on a lock that renews by RenewAsync")
}

func (l *asyncLock) RenewAsync(ctx context.Context, done func(driver.Validity, error)) {
	if _, ok := ctx.Deadline(); !ok {
		panic("RenewAsync's ctx has no deadline")
	}
	if g := int64(runtime.NumGoroutine()); g > l.d.most.Load() {
		l.d.most.Store(g) // RenewAsync's callers may race: a rough maximum
	}
	l.d.pending <- asyncRenewal{l.token, done}
}

type asyncRenewal struct {
	token uint64
	done  func(driver.Validity, error)
}

// TestAsyncRenewalCostsNoGoroutine: while the engine has not answered the
// renewals of many leases, the portable layer spends no goroutine per
// lease waiting for them; the answers rearm the leases (they renew
// again), an Unlock does not wait for a renewal in flight to be answered
// and a late answer to it is ignored, and a renewal answered with a loss
// ends its lease only.
func TestAsyncRenewalCostsNoGoroutine(t *testing.T) {
	const n = 300
	d := &asyncDriver{manyDriver: manyDriver{coalesce: true}, pending: make(chan asyncRenewal, 4*n)}
	c, err := dlock.NewClient(d, dlock.WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	before := runtime.NumGoroutine()
	leases := make([]*dlock.Lease, n)
	for i := range leases {
		if leases[i], err = c.Mutex(fmt.Sprint("a", i)).Lock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Every lease's first renewal reaches the driver (within its 1 s
	// interval) and is left unanswered.
	var first []asyncRenewal
	for range n {
		select {
		case r := <-d.pending:
			first = append(first, r)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d renewals reached the driver in 10 s", len(first), n)
		}
	}
	// The renewals of a wave start from one goroutine, not one each.
	if most := d.most.Load() - int64(before); most > 20 {
		t.Errorf("%d goroutines more than before the locks while the renewals of %d leases started, want a few", most, n)
	}
	var g int
	for range 50 { // timer goroutines that started the renewals end at once
		if g = runtime.NumGoroutine() - before; g <= 5 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g > 5 {
		t.Errorf("%d unanswered renewals cost %d goroutines, want none per lease", n, g)
	}
	// The last lease's holder lets go while its renewal is in flight: the
	// Unlock does not wait for the engine's answer.
	unlocked := make(chan error, 1)
	go func() { unlocked <- leases[n-1].Unlock(ctx) }()
	select {
	case err := <-unlocked:
		if err != nil {
			t.Errorf("Unlock with a renewal in flight: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Unlock waits for an unanswered asynchronous renewal")
	}
	// Answer: lease 0 lost, the others renewed (and the last one's answer
	// comes after its Unlock: ignored).
	for _, r := range first {
		if r.token == leases[0].Token() {
			r.done(driver.Validity{}, fmt.Errorf("%w: gone", driver.ErrLockLost))
			continue
		}
		r.done(driver.Validity{Since: time.Now(), TTL: 3 * time.Second}, nil)
	}
	select {
	case <-leases[0].Done():
	case <-time.After(time.Second): // its deadline is 1.7 s away
		t.Fatal("a renewal answered with ErrLockLost did not end its lease")
	}
	if err := leases[0].Err(); !errors.Is(err, dlock.ErrLockLost) || !strings.Contains(err.Error(), "renewal found it gone") {
		t.Errorf("lost lease's Err = %v, want ErrLockLost from the renewal", err)
	}
	// The renewed leases renew again.
	for got := 0; got < n-2; got++ {
		select {
		case r := <-d.pending:
			r.done(driver.Validity{Since: time.Now(), TTL: 3 * time.Second}, nil)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d renewed leases renewed again in 10 s", got, n-2)
		}
	}
	for i, l := range leases[1 : n-1] {
		if err := l.Err(); err != nil {
			t.Fatalf("lease %d ended: %v", i+1, err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Errorf("Unlock: %v", err)
		}
	}
}

// coalescingStub is the stub driver saying that it coalesces renewals, so
// that its leases renew on the client's grid.
type coalescingStub struct{ *stub }

func (coalescingStub) CoalescesRenewals() bool { return true }

// TestEndedLeaseLeavesTheGrid: a lease that ends before its renewal is due
// is not kept by the grid point it was scheduled on, which would keep every
// lease taken and ended within a renewal interval (a third of the TTL) in
// memory until that point fires: tens of megabytes for a client that locks
// and unlocks quickly (redislock's BenchmarkLadder: 46 MB of live heap
// after 50,000 uncontended cycles).
func TestEndedLeaseLeavesTheGrid(t *testing.T) {
	c, err := dlock.NewClient(coalescingStub{&stub{}}, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	keep, err := c.Mutex("grid").Lock(ctx) // held: the point it shares stays
	if err != nil {
		t.Fatal(err)
	}
	var ended []weak.Pointer[dlock.Lease]
	for range 3 {
		l, err := c.Mutex(fmt.Sprint("grid-", len(ended))).Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ended = append(ended, weak.Make(l))
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A stopped timer of the lease (its deadline's) may stay in the
	// runtime's timer heap, and keep the lease, until its P next runs its
	// timers: collect a few times, letting the scheduler run between.
	// Held by the grid, a lease stays for 20 s (TTL / 3).
	for try := 0; ; try++ {
		runtime.GC()
		left := 0
		for _, w := range ended {
			if w.Value() != nil {
				left++
			}
		}
		if left == 0 {
			break
		}
		if try == 100 {
			t.Fatalf("%d of %d ended leases still reachable after %d GCs: kept by the renewal grid until its point fires", left, len(ended), try+1)
		}
		runtime.Gosched()
	}
	if err := keep.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
