package zklock

import (
	"context"
	"time"

	"github.com/go-zookeeper/zk"
)

// Why renewals and grants after a wait are transactions, not reads.
//
// A read (Exists, Children) is answered by the server the client is
// connected to, from its own copy of the tree. A follower cut off from the
// leader goes on answering reads, and its clients' pings, for up to
// syncLimit x tickTime before it gives up on the leader; a leader cut off
// from its followers goes on answering for as long before it notices it
// has lost its quorum. Meanwhile the quorum's leader hears nothing of the
// session (a follower passes its clients' activity on in its replies to the
// leader's pings), expires it after the session timeout and grants the
// lock to the next waiter. A renewal read answered there proves nothing.
// Seen in TestServerCutOff: a waiter on the leader was granted the lock
// 2.0 s after the holder's follower was cut off, while the holder's Done
// stayed open until 4.2 s.
//
// A sync before the read is not enough: a follower forwards it to the
// leader, but the leader answers a sync from a client of its own at once,
// without its followers, so a cut-off leader answers it too (and the
// leader's session check on a forwarded sync is not passed back to the
// client, see Leader.processSync). A check of our node inside a multi is a
// transaction: the leader checks the session (SESSIONEXPIRED once it has
// expired it) and the node (NONODE once it is gone) and a quorum logs it
// before anyone answers. So when the check succeeds, the session was alive
// and the node ours at the leader, and a quorum knew it, at some time after
// the check was sent; a cut-off follower cannot forward it and a cut-off
// leader cannot commit it, so the check fails or hangs until the connection
// drops. It costs a round trip through the leader and one logged
// transaction (it changes nothing in the tree and fires no watch).
//
// What it does not prove: that the leader had heard of the session's
// activity at the check's send time. A follower reports its clients'
// activity to the leader in its replies to the leader's pings, every
// tickTime/2; a follower cut off right after forwarding the check leaves
// the leader's last news of the session as old as the report before, up to
// tickTime/2 plus the client's quiet time before the check (a ping every
// session timeout/3 at most) older than the send time. The lease's safety
// margin covers that only when it is larger; see docs/GUARANTEES.md for
// what the partition scenarios measured.

// checkNode proves, by a transaction, that nodePath exists and the session
// is alive at the leader (see above). It returns zk.ErrNoNode if the node
// is gone and zk.ErrSessionExpired if the session is.
func (d *zkDriver) checkNode(nodePath string) error {
	_, err := d.conn.Multi(&zk.CheckVersionRequest{Path: nodePath, Version: -1})
	return err
}

// quorumCheck is a checkNode in flight, sent at sent.
type quorumCheck struct {
	sent time.Time
	done chan struct{}
	err  error
}

// startCheck sends a checkNode of nodePath without waiting for its answer.
func (d *zkDriver) startCheck(nodePath string) *quorumCheck {
	q := &quorumCheck{sent: time.Now(), done: make(chan struct{})}
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		q.err = d.checkNode(nodePath)
		close(q.done)
	}()
	return q
}

// wait returns the check's outcome, or ctx's error if ctx ends first.
func (q *quorumCheck) wait(ctx context.Context) error {
	select {
	case <-q.done:
		return q.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// usable reports whether the check can still prove a grant: sent less than
// maxAge ago, and not failed (in flight is fine: the grant waits for it).
func (q *quorumCheck) usable(maxAge time.Duration) bool {
	if time.Since(q.sent) >= maxAge {
		return false
	}
	select {
	case <-q.done:
		return q.err == nil
	default:
		return true
	}
}
