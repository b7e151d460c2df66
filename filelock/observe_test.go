package filelock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

const electChildEnv = "DLOCK_FILELOCK_ELECT_CHILD"

// electChild campaigns for NAME with VALUE in DIR, prints "leading TERM"
// and leads until killed.
func electChild() int {
	c, err := New(os.Getenv("DIR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	l, err := c.Election(os.Getenv("NAME")).Campaign(context.Background(), os.Getenv("VALUE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("leading", l.Term())
	select {}
}

// TestElectionAcrossProcesses: a leader in another process is seen by
// Leader and Observe; killed, it is seen gone at once, and the next
// candidate leads with a larger term.
func TestElectionAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	c := newClient(t, dir)
	e := c.Election("svc")
	ch, err := e.Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), electChildEnv+"=1", "DIR="+dir, "NAME=svc", "VALUE=child:1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	term, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(line), "leading "), 10, 64)
	if err != nil {
		t.Fatalf("child printed %q", line)
	}
	want := dlock.Leader{Value: "child:1", Term: term}
	nextLeader(t, ch, want)
	if got, err := e.Leader(t.Context()); err != nil || got != want {
		t.Fatalf("Leader = %+v, %v; want %+v", got, err, want)
	}
	if l, err := e.TryCampaign(t.Context(), "parent"); !errors.Is(err, dlock.ErrNotAcquired) {
		if l != nil {
			l.Resign(t.Context())
		}
		t.Fatalf("TryCampaign while the child leads = %v, want ErrNotAcquired", err)
	}
	start := time.Now()
	cmd.Process.Kill()
	at := nextLeader(t, ch, dlock.Leader{})
	t.Logf("observer saw the killed leader gone %v after the kill", at.Sub(start))
	cmd.Wait()
	l, err := e.Campaign(t.Context(), "parent")
	if err != nil {
		t.Fatal(err)
	}
	if l.Term() <= term {
		t.Errorf("term %d after the child's %d", l.Term(), term)
	}
	nextLeader(t, ch, dlock.Leader{Value: "parent", Term: l.Term()})
	if err := l.Resign(t.Context()); err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{})
}

// TestObserverWakesOnEventsOnly: an observer looks at its leader file only
// when an event concerns it: not for other names' locks, nor for readers
// of its name, nor for other observers' and Leader's reads; an exclusive
// holder (a Mutex too) is seen at once, with an empty value.
func TestObserverWakesOnEventsOnly(t *testing.T) {
	dir := t.TempDir()
	o, c := newClient(t, dir), newClient(t, dir)
	ch, err := o.Election("x").Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{})
	other, err := c.Election("x").Observe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nextLeader(t, other, dlock.Leader{})
	before := observerLooks.Load()
	for i := range 20 {
		l, err := c.Election(fmt.Sprint("y", i%3)).Campaign(t.Context(), "y")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Resign(t.Context()); err != nil {
			t.Fatal(err)
		}
		r, err := c.RWMutex("x").RLock(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.Election("x").Leader(t.Context()); err != nil || got != (dlock.Leader{}) {
			t.Fatalf("Leader while only readers hold = %+v, %v; want nobody", got, err)
		}
		if err := r.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Status(t.Context(), "x"); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Semaphore("x2", 2).Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Election("x2").Leader(t.Context()); err != nil || got != (dlock.Leader{}) {
		t.Errorf("Leader of a semaphore's name = %+v, %v; want nobody", got, err)
	}
	s.Unlock(t.Context())
	if n := observerLooks.Load() - before; n != 0 {
		t.Errorf("idle observers looked %d times while other names and readers came and went", n)
	}
	m, err := c.Mutex("x").Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{Term: m.Token()})
	if err := m.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{})
	t.Logf("%d looks for one holder and its release, by 2 observers", observerLooks.Load()-before)
}

// TestObserveDirectoryRemoved: once the lock directory is removed, an
// observer reports nobody, and its channel stays open until its context
// ends.
func TestObserveDirectoryRemoved(t *testing.T) {
	dir := t.TempDir() + "/locks"
	o, c := newClient(t, dir), newClient(t, dir)
	l, err := c.Election("x").Campaign(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := o.Election("x").Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{Value: "a", Term: l.Term()})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	nextLeader(t, ch, dlock.Leader{})
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Error("the leader's lease not done 5 s after its directory was removed")
	}
	select {
	case got, ok := <-ch:
		t.Fatalf("Observe sent %+v (open: %v) after reporting nobody, with nothing changed", got, ok)
	default:
	}
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("Observe sent a state after its context ended")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Observe's channel still open 5 s after its context ended")
	}
}

// TestObserversOfOneClient: observers of one name in one client share its
// inotify watches; each sees every leader, and one ending leaves the
// others observing.
func TestObserversOfOneClient(t *testing.T) {
	dir := t.TempDir()
	o, c := newClient(t, dir), newClient(t, dir)
	var chs []<-chan dlock.Leader
	cancels := make([]context.CancelFunc, 3)
	for i := range cancels {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		cancels[i] = cancel
		ch, err := o.Election("x").Observe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		nextLeader(t, ch, dlock.Leader{})
		chs = append(chs, ch)
	}
	for round := range 3 {
		l, err := c.Election("x").Campaign(t.Context(), fmt.Sprint("v", round))
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chs[round:] {
			nextLeader(t, ch, dlock.Leader{Value: fmt.Sprint("v", round), Term: l.Term()})
		}
		if err := l.Resign(t.Context()); err != nil {
			t.Fatal(err)
		}
		for _, ch := range chs[round:] {
			nextLeader(t, ch, dlock.Leader{})
		}
		cancels[round]() // the others go on
		for range chs[round] {
		}
	}
}
