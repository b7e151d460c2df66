package zklock

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/internal/testserver"
)

var rollbackRounds = flag.Int("zk.rollback", 0, "rounds of TestEnsembleKeepsCommittedWrites, a check of the ZooKeeper server, not of zklock (0: skip)")

// TestEnsembleKeepsCommittedWrites checks an assumption of every lock on
// ZooKeeper, zklock's included: what the ensemble acknowledged stays. Two
// overlapping cuts (a follower cut off; 5.5 s later a second server, which
// leaves no quorum; the first healed 0.5 s after that, the second 5.5 s
// later) must keep every acknowledged write, and a node deleted with its
// expired session must stay deleted.
//
// ZooKeeper 3.8.0 (Debian's, here) breaks it now and then: the first
// server, healed, starts to sync from a new leader, records the new epoch,
// and loses the sync ("NEWLEADER ACK from sid: 1 is from a different
// epoch"); in the next election its new epoch outranks the others' newer
// logs, it leads with its stale log, and they truncate theirs ("Truncating
// log to get in sync with the leader"): writes acknowledged during the
// first cut are gone, and the expired session's deleted nodes are back.
// This is what ZOOKEEPER-4685 and ZOOKEEPER-4643 describe (fixes proposed
// in apache/zookeeper#1993 and #2028). It is what the safety suite saw as
// zookeeper/{semaphore,rwmutex}/isolate-follower: two runs side by side cut
// two servers at once. Seen here in 2 rounds of 22, both with the other
// follower cut second: every write acknowledged during the first cut lost
// (2 735 in one), the deleted node back.
//
// It is opt-in (-zk.rollback=N) because it tests the server, not zklock.
func TestEnsembleKeepsCommittedWrites(t *testing.T) {
	if *rollbackRounds <= 0 {
		t.Skip("a check of the ZooKeeper server: run with -args -zk.rollback=ROUNDS")
	}
	for round := range *rollbackRounds {
		for _, second := range []string{"other follower", "leader"} {
			t.Run(fmt.Sprintf("%d/%s", round, second), func(t *testing.T) { doubleCut(t, second) })
		}
	}
}

// doubleCut runs one round of TestEnsembleKeepsCommittedWrites; second
// names the role of the server cut second.
func doubleCut(t *testing.T, second string) {
	nw := testserver.NewNetwork(t)
	procs := testserver.StartZooKeeper(t, 3, testserver.OnNetwork(nw))
	roles := zkRoles(t, procs)
	first, other := roles["follower"], roles["other follower"]
	if second == "other follower" {
		other = roles["leader"]
	}
	cut2 := roles[second]
	connect := func(p *testserver.Proc, timeout time.Duration) *zk.Conn {
		c, events, err := zk.Connect([]string{p.Addr()}, timeout, zk.WithLogger(quiet{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		deadline := time.After(time.Minute)
		for {
			select {
			case ev := <-events:
				if ev.State == zk.StateHasSession {
					return c
				}
			case <-deadline:
				t.Fatalf("no session on %s in a minute", p.Name())
			}
		}
	}
	acl := zk.WorldACL(zk.PermAll)
	onFirst, onOther := connect(first, 2*time.Second), connect(other, 8*time.Second)
	if _, err := onOther.Create("/rollback", nil, 0, acl); err != nil {
		t.Fatal(err)
	}
	eph, err := onFirst.Create("/rollback/eph", nil, zk.FlagEphemeral, acl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onOther.Sync(eph); err != nil {
		t.Fatal(err)
	}
	ok, _, deleted, err := onOther.ExistsW(eph)
	if err != nil || !ok {
		t.Fatalf("the ephemeral node on the other side: exists %v, %v", ok, err)
	}

	start := time.Now()
	nw.Isolate(first)
	<-deleted // the first server's session expired at the quorum
	t.Logf("%v: %s cut off; its session's ephemeral node deleted", time.Since(start).Round(time.Millisecond), first.Name())
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w, c := range []*zk.Conn{onOther, connect(cut2, 8*time.Second), onOther, connect(cut2, 8*time.Second)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p, err := c.Create(fmt.Sprintf("/rollback/w%d-%06d", w, i), nil, 0, acl)
				switch {
				case errors.Is(err, zk.ErrNoServer), errors.Is(err, zk.ErrConnectionClosed):
					return
				case err == nil:
					mu.Lock()
					acked = append(acked, p)
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(5500*time.Millisecond - time.Since(start)) // the fault schedule
	nw.Isolate(cut2)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	nw.Heal(first)
	time.Sleep(5500 * time.Millisecond)
	nw.Heal(cut2)
	testserver.WaitZooKeeperServing(t, procs...)
	t.Logf("%v: healed; %d writes were acknowledged", time.Since(start).Round(time.Millisecond), len(acked))

	for _, p := range procs {
		c := connect(p, 8*time.Second)
		if _, err := c.Sync("/rollback"); err != nil {
			t.Fatal(err)
		}
		back, _, err := c.Exists(eph)
		if err != nil {
			t.Fatal(err)
		}
		kids, _, err := c.Children("/rollback")
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, k := range kids {
			have["/rollback/"+k] = true
		}
		lost := 0
		for _, a := range acked {
			if !have[a] {
				lost++
			}
		}
		if back || lost > 0 {
			t.Errorf("%s: %d of %d acknowledged writes lost; the deleted ephemeral node back: %v", p.Name(), lost, len(acked), back)
		}
	}
	if t.Failed() {
		for _, p := range procs {
			logLines(t, p, "LEADER ELECTION TOOK", "PeerState set to LOOKING", "different epoch", "Truncating log")
		}
	}
}

// logLines logs the lines of p's server log that contain one of words.
func logLines(t *testing.T, p *testserver.Proc, words ...string) {
	f, err := os.Open(p.LogPath())
	if err != nil {
		t.Log(err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, w := range words {
			if strings.Contains(sc.Text(), w) {
				t.Logf("%s: %.220s", p.Name(), sc.Text())
				break
			}
		}
	}
}
