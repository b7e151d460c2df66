package filelock

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dlockio/dlock"
)

// TestWaitersWakeWhenHoldersAreKilled: a waiter gets the lock (or the
// permit) of a holder killed in another process at once, every time, and
// a reader gets in at once when the writer it waits behind is killed
// while it waits. The kernel reports the dying process's close (the event
// the waiter wakes on) a moment before it drops the process's flock (or
// its OFD mark on the turnstile), so a waiter that tried in between would
// find it still there and, with no further event, wait for ever: each
// waiter has to be granted within a bound of the death. DLOCK_KILLS sets the number of holders killed (40).
func TestWaitersWakeWhenHoldersAreKilled(t *testing.T) {
	kills := 40
	if s := os.Getenv("DLOCK_KILLS"); s != "" {
		var err error
		if kills, err = strconv.Atoi(s); err != nil {
			t.Fatalf("DLOCK_KILLS=%q: %v", s, err)
		}
	}
	const (
		perRound = 8
		bound    = 2 * time.Second
	)
	dir := t.TempDir()
	clients := []*dlock.Client{newClient(t, dir), newClient(t, dir)}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"Mutex.Lock", "RWMutex.RLock", "Semaphore.Acquire", "RLock behind a waiting writer"}
	var lat []time.Duration
	missed := map[string]int{}
	for round := 0; round*perRound < kills; round++ {
		cmds := make([]*exec.Cmd, perRound)
		names := make([]string, perRound)
		var readers []*dlock.Lease // what the killed waiting writers wait for
		for i := range cmds {
			names[i] = fmt.Sprintf("r%d-%d", round, i)
			mode, n := "hold", "0"
			switch i % len(kinds) {
			case 2:
				mode, n = "semhold", "1"
			case 3:
				mode = "writer" // waits behind our reader, marking the turnstile
				r, err := clients[0].RWMutex(names[i]).RLock(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				readers = append(readers, r)
			}
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), rwChildEnv+"="+mode, "DIR="+dir, "NAME="+names[i], "N="+n)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			if mode == "writer" {
				markedTurnstile(t, dir, names[i])
			} else if line, err := bufio.NewReader(out).ReadString('\n'); line != "holding\n" {
				t.Fatalf("child: %q, %v", line, err)
			}
			cmds[i] = cmd
		}
		ctx, cancel := context.WithCancel(t.Context())
		granted := make([]chan time.Time, perRound)
		for i := range granted {
			granted[i] = make(chan time.Time, 1)
			c := clients[i%len(clients)]
			acquire := []func(context.Context) (*dlock.Lease, error){
				c.Mutex(names[i]).Lock, c.RWMutex(names[i]).RLock, c.Semaphore(names[i], 1).Acquire,
				c.RWMutex(names[i]).RLock,
			}[i%len(kinds)]
			go func() {
				l, err := acquire(ctx)
				if err != nil {
					close(granted[i])
					return
				}
				granted[i] <- time.Now()
				close(granted[i])
				l.Unlock(context.Background())
			}()
		}
		parked(t, perRound)
		killed := make([]time.Time, perRound)
		for i, cmd := range cmds {
			killed[i] = time.Now()
			cmd.Process.Kill()
		}
		for _, cmd := range cmds {
			cmd.Wait()
		}
		for i := range granted {
			kind := kinds[i%len(kinds)]
			at, ok, in := time.Time{}, false, false
			select {
			case at, ok = <-granted[i]:
				in = true
			case <-time.After(time.Until(killed[i].Add(bound))):
				// Granted meanwhile counts only if granted in time.
				select {
				case at, ok = <-granted[i]:
					in = true
				default:
				}
			}
			switch {
			case in && !ok:
				t.Fatalf("%s of %s failed", kind, names[i])
			case in && at.Sub(killed[i]) <= bound:
				lat = append(lat, at.Sub(killed[i]))
			default:
				missed[kind]++
				t.Errorf("%s of %s not granted %v after its holder was killed", kind, names[i], bound)
			}
		}
		cancel()
		for i := range granted {
			<-granted[i] // closed: the missed ones return, cancelled
		}
		for _, r := range readers {
			if err := r.Unlock(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	t.Logf("%d holders killed: missed wake-ups %v; grant after the kill p50 %v, p99 %v, max %v (of %d granted)",
		kills, missed, lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1], len(lat))
}
