package drivertest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/driver"
)

// ManyLocks is how many locks testManyLocks holds on one client (fewer
// with -short).
const ManyLocks = 1000

// testManyLocks: one client holds many distinct locks through renewals;
// the engine's loss of one of them ends that lease only, and the others
// stay held and are released. A driver whose locks report loss by a call
// (driver.LossNotifier) or not at all spends at most a goroutine per
// hundred held locks.
func testManyLocks(t *testing.T, s *suite) {
	n := ManyLocks
	if m, ok := s.h.(ManyLockser); ok {
		n = m.ManyLocks()
	}
	if testing.Short() {
		n /= 5
	}
	// The TTL of issue 16's scale figures, or the harness's short TTL if
	// longer: this is about how many locks a client keeps, not how fast it
	// renews one (a loaded 2-core CI box takes seconds over 1,000 grants).
	ttl := max(s.shortTTL(), 6*time.Second)
	c, d := s.client(t, dlock.WithTTL(ttl))
	prefix := lockName(t)
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s/%d", prefix, i)
	}
	leases := make([]*dlock.Lease, n)
	before, _ := goroutines()
	start := time.Now()
	each(n, func(i int) error {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		l, err := c.Mutex(names[i]).TryLock(ctx)
		if err != nil {
			return fmt.Errorf("TryLock(%q): %w", names[i], err)
		}
		leases[i] = l
		return nil
	}, t)
	if t.Failed() {
		return
	}
	took := time.Since(start)
	t.Logf("%d locks taken in %v", n, took.Round(time.Millisecond))

	// Hold them through renewals, counting goroutines as we go. A driver
	// whose locks renew by a call (driver.AsyncRenewer) spends no goroutine
	// on a renewal in flight: with a fault proxy, the engine's replies are
	// slowed by a twelfth of the TTL the engine grants (a ZooKeeper server
	// may cap it; a twelfth is a quarter of the renewal interval: small
	// enough for two rounds of a wave to fit in the time a lease has left
	// when its renewal is due) and the hold lasts a TTL, so that renewals
	// are in flight for a good part of it, and the count nine samples in
	// ten stay under (not counting brief bursts of the renewal timers'
	// goroutines) must be within the bound too. For the others a renewal
	// in flight costs a goroutine for its round trip, so the cost of
	// holding is the fewest seen over the hold.
	async := asyncRenewer(leases[0].Driver())
	undo, holdFor := func() {}, ttl/2 // past the first renewal, due at ttl/3 at the latest
	if f, ok := s.h.(Faulter); ok && async {
		delay := grantedTTL(t, s, c, prefix+"/probe") / 12
		var err error
		if undo, err = f.Fault(d, "", Fault{Delay: delay, Dir: ToClient}); err != nil {
			t.Fatalf("Fault: %v", err)
		}
		defer undo()
		holdFor = ttl
	}
	var counts []int
	least, leastTops, most, mostTops := -1, "", -1, ""
	hold := time.After(holdFor)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
sample:
	for {
		select {
		case <-hold:
			break sample
		case <-s.ctx.Done():
			t.Fatal(s.ctx.Err())
		case <-tick.C:
			now, tops := goroutines()
			counts = append(counts, now)
			if least < 0 || now < least {
				least, leastTops = now, tops
			}
			if now > most {
				most, mostTops = now, tops
			}
		}
	}
	undo()
	sort.Ints(counts)
	more, p90 := least-before, counts[len(counts)*9/10]-before
	t.Logf("holding them costs %d more goroutines (%.3f per lock; the fewest over %v), %d nine samples in ten (async renewal: %v)",
		more, float64(more)/float64(n), holdFor, p90, async)
	if async {
		t.Logf("the most goroutines seen: %d more; the most common tops of stacks then: %s", most-before, mostTops)
	}
	if multiplexed(leases[0].Driver()) && more > n/100+20 {
		t.Errorf("holding %d locks costs %d goroutines; want at most one per hundred locks for a driver whose locks report loss by a call; the most common tops of stacks then: %s",
			n, more, leastTops)
	}
	// Requests in flight cost a few goroutines per connection (a sender, a
	// reader): Redlock has five nodes with a few batches in flight on each.
	if async && multiplexed(leases[0].Driver()) && p90 > n/100+50 {
		t.Errorf("holding %d locks costs %d goroutines (nine samples in ten over the hold, renewals in flight); want at most one per hundred locks (and a few per connection) for a driver whose locks renew by a call (driver.AsyncRenewer); the most common tops of stacks at the most seen: %s",
			n, p90, mostTops)
	}
	for _, l := range leases {
		mustHold(t, l)
	}

	lf, _ := s.h.(LossForcer)
	sessionLoss := false
	if lf != nil {
		victim := leases[n/2]
		if err := lf.ForceLoss(s.ctx, victim.Name()); err != nil {
			t.Fatalf("ForceLoss: %v", err)
		}
		mustBeDone(t, victim, ttl, dlock.ErrLockLost)
		if sl, ok := s.h.(SessionLoss); ok && sl.LossEndsSession() {
			t.Log("the harness's ForceLoss ends the holder's session: the other locks on it may go too")
			sessionLoss = true // their Unlocks may report the loss
		} else {
			for i, l := range leases {
				if i != n/2 {
					mustHold(t, l)
				}
			}
		}
	}

	start = time.Now()
	each(n, func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := leases[i].Unlock(ctx)
		if i == n/2 && lf != nil || sessionLoss && errors.Is(err, dlock.ErrLockLost) {
			return nil // lost above
		}
		if err != nil {
			return fmt.Errorf("Unlock(%q): %w", names[i], err)
		}
		return nil
	}, t)
	t.Logf("%d locks released in %v", n, time.Since(start).Round(time.Millisecond))

	// Released for real: another client takes a sample of them at once.
	other, _ := s.client(t, dlock.WithTTL(ttl))
	for i := 0; i < n; i += n / 10 {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		l, err := other.Mutex(names[i]).TryLock(ctx)
		cancel()
		if err != nil {
			t.Errorf("TryLock(%q) after the release of all: %v", names[i], err)
			continue
		}
		unlock(t, l)
	}
}

// multiplexed reports whether the portable layer spends no goroutine on
// the loss of l.
func multiplexed(l driver.Lock) bool {
	if _, ok := l.(driver.LossNotifier); ok {
		return true
	}
	return l.Lost() == nil
}

// grantedTTL returns the TTL the engine grants c's locks, as a renewal of
// a lock taken for the purpose reports it.
func grantedTTL(t *testing.T, s *suite, c *dlock.Client, name string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	l, err := c.Mutex(name).TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock(%q): %v", name, err)
	}
	defer unlock(t, l)
	v, err := l.Driver().Renew(ctx)
	if err != nil || v.TTL <= 0 {
		t.Fatalf("Renew of %q: validity %+v, %v; want the TTL granted", name, v, err)
	}
	return v.TTL
}

// asyncRenewer reports whether the portable layer renews l without a
// goroutine waiting for the engine.
func asyncRenewer(l driver.Lock) bool {
	_, ok := l.(driver.AsyncRenewer)
	return ok
}

// each runs f(0..n-1) on 16 goroutines, reporting errors on t (at most ten).
func each(n int, f func(i int) error, t *testing.T) {
	t.Helper()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		next   int
		failed int
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := failed > 0
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					failed++
					if len(errs) < 10 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
}

// goroutines counts the process's goroutines, but for those of an
// in-process fault proxy (internal/faultproxy, which this module's harnesses
// put between a driver and its engine: four goroutines per proxied
// connection, none of them the driver's), and names the five functions most
// often found on top of the stacks counted.
func goroutines() (int, string) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	tops := map[string]int{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "/internal/faultproxy.") {
			continue
		}
		count++
		if lines := strings.Split(g, "\n"); len(lines) > 1 {
			top := lines[1]
			if i := strings.LastIndexByte(top, '('); i > 0 {
				top = top[:i]
			}
			tops[top]++
		}
	}
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range tops {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var b strings.Builder
	for i, e := range all {
		if i == 5 {
			break
		}
		fmt.Fprintf(&b, "%d %s; ", e.v, e.k)
	}
	return count, b.String()
}
