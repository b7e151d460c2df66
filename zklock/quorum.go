package zklock

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Why renewals and grants after a wait are proven by transactions, not
// reads (a grant after a short wait by its own create: see createProof).
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
// activity at the check's send time. A follower passes its clients'
// activity on to the leader in its replies to the leader's pings, every
// tickTime/2, and the leader expires a session a timeout after the last
// such report. A follower cut off right after forwarding the check loses
// the report of it, and the leader's last news of the session may be older
// than the check by up to tickTime/2 plus the client's quiet time before it
// (go-zookeeper pings every timeout/3). Seen with the check alone: cut right
// after a renewal's answer, the waiter was granted the lock 21 ms before
// the holder's Done closed; cut right after a grant on a quiet session,
// 93 and 112 ms before (2 rounds of 10).
//
// So a proof's validity counts from the send time of the session's latest
// request whose answer came back at least reportLag (timeout/4) before the
// proof was sent. The server had the request by the time its answer came
// back, and the proof reached the follower no earlier than it was sent, so
// the follower had the request reportLag or more before it had the proof:
// it answered a ping of the leader's in between (tickTime/2 <= timeout/4
// when the server's minSessionTimeout is its default, 2 x tickTime), and
// the leader renewed the session then, after the request was sent; or it
// lost its leader in between, and could not forward the proof (a follower
// that finds a new leader syncs with it, and a new leader starts every
// session's timeout afresh). The request's send time alone would not do:
// a connection that stalls and then flushes (TCP rides out a short
// partition) delivers a request sent reportLag before the proof back to
// back with it, and a follower cut off right after forwarding the proof
// reports neither. Seen in TestStalledClientThenCutOff, when a proof
// counted from a request sent timeout/4 before it: a grant's check sent 6 s
// into a stall of a 10 s session counted from a heartbeat read sent during
// the stall; the leader, whose last news of the session came from before
// the stall, granted the lock to a waiter 1.1 to 1.5 s before the holder's
// Done closed, in 5 runs of 6 (in the sixth the follower reported the
// flush before it was cut off).
//
// A light heartbeat (a read every timeout/16, sent on time whether or not
// the previous ones have been answered) keeps such activity recent; a
// proof reports a TTL of timeout minus its distance to that activity,
// capped at 5/8 of the timeout (reportLag, one heartbeat period, and
// another for the read's answer to come back), which the heartbeat keeps
// it at while its reads are answered within timeout/16 (a third at worst,
// on a connection given to New in its first moments): the price of
// ZooKeeper telling the leader of a follower's sessions only at its pings.

// checkNode proves, by a transaction, that nodePath exists and the session
// is alive at the leader (see above). It returns zk.ErrNoNode if the node
// is gone and zk.ErrSessionExpired if the session is.
func (d *Driver) checkNode(nodePath string) error {
	_, err := d.conn.Multi(&zk.CheckVersionRequest{Path: nodePath, Version: -1})
	return err
}

// createProof is our node's create, answered, as the proof of a grant
// after a wait, while it is recent (usable: sent less than reportLag ago,
// the age a check may have when the grant uses it). The create is a
// transaction like the check: the leader checked the session and a quorum
// logged our node, at some time after sent. What a later check would add
// is that our node is still there: but the leader deletes it only when it
// expires the session, which provenTTL bounds from the same send time and
// the same activity record whichever transaction is used, or when someone
// deletes it (an operator, by hand), which our node's watch reports as
// for a held lock. Nothing can be ahead of our node that the grant's read
// or watch did not show gone: every node ahead was in the listing sent
// after our create, a deletion a server reports is committed, and no node
// can join ahead later. So the grant is as sound as with a check sent at
// the create's time, which is what a check sent right after the listing
// nearly is; it spares the waiter's quorum round, a logged transaction
// per contended grant.
func createProof(sent time.Time) *quorumCheck {
	return &quorumCheck{sent: sent, done: answered}
}

// answered is closed: a proof already answered, successfully.
var answered = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// quorumCheck is a checkNode in flight, sent at sent.
type quorumCheck struct {
	sent time.Time
	done chan struct{}
	err  error
}

// startCheck sends a checkNode of nodePath without waiting for its answer.
func (d *Driver) startCheck(nodePath string) *quorumCheck {
	q := &quorumCheck{sent: time.Now(), done: make(chan struct{})}
	hook(testHooks.checkSent)
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

// reportLag bounds how long the leader may take to hear of a session's
// activity at a follower (one ping period, tickTime/2; see above).
func (d *Driver) reportLag() time.Duration { return d.ttl() / 4 }

// activity keeps what renewed the current session at the leader: the
// latest time the session was asked for or re-established on a connection
// (the leader itself creates it, or renews it before the server accepts
// the connection, after that time) and the send and answer times of its
// answered requests, oldest sent first: the heartbeat's over about three
// timeouts, and the latest few proofs apart. The two are kept apart so that a burst of
// proofs (grants, renewal rounds) cannot push out the heartbeat's record,
// which the proofs' TTLs count from: seen at 1,000 held locks, when each
// renewal was its own proof, every renewal failed with errStaleActivity.
type activity struct {
	mu     sync.Mutex
	sess   int64
	born   time.Time
	beats  []stamp
	proofs []stamp
}

// stamp is an answered request: when it was sent, and when its answer was
// received (or later).
type stamp struct{ sent, answered time.Time }

const (
	beatsKept  = 48 // a heartbeat every timeout/16, over 3 timeouts
	proofsKept = 24
)

func (a *activity) switchTo(sess int64) {
	if sess != a.sess {
		a.sess, a.born, a.beats, a.proofs = sess, time.Time{}, a.beats[:0], a.proofs[:0]
	}
}

// connected records that session sess was asked for, or re-established on
// a new connection, by a connection attempt that began at t.
func (a *activity) connected(sess int64, t time.Time) {
	if sess == 0 || t.IsZero() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.switchTo(sess)
	if t.After(a.born) {
		a.born = t
	}
}

// beat records that session sess sent a heartbeat at sent whose answer was
// received by answered.
func (a *activity) beat(sess int64, sent, answered time.Time) {
	a.add(sess, stamp{sent, answered}, &a.beats, beatsKept)
}

// proved records that session sess sent a proof at sent that succeeded,
// answered by answered.
func (a *activity) proved(sess int64, sent, answered time.Time) {
	a.add(sess, stamp{sent, answered}, &a.proofs, proofsKept)
}

func (a *activity) add(sess int64, st stamp, ring *[]stamp, keep int) {
	if sess == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.switchTo(sess)
	at := *ring
	i := len(at)
	for i > 0 && at[i-1].sent.After(st.sent) {
		i--
	}
	at = slices.Insert(at, i, st)
	if len(at) > keep {
		at = slices.Delete(at, 0, len(at)-keep)
	}
	*ring = at
}

// base returns the latest time from which the leader is known to have
// renewed session sess by the time a proof sent at sent reached it: the
// session's latest (re)connection, or the send time of its latest request
// answered at least lag before sent (the follower has reported it since;
// see above).
func (a *activity) base(sess int64, sent time.Time, lag time.Duration) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sess != a.sess {
		return time.Time{}, false
	}
	base, ok := a.born, !a.born.IsZero()
	before := sent.Add(-lag)
	for _, at := range [][]stamp{a.beats, a.proofs} {
		// Answers may come back out of send order (proofs and reads go by
		// different paths at the server): look at every one.
		for _, st := range at {
			if !st.answered.After(before) && st.sent.After(base) {
				base, ok = st.sent, true
			}
		}
	}
	return base, ok
}

// provenTTL returns the TTL, counted from sent, that a proof of session
// sess sent at sent supports: the timeout from activity.base. Where the
// record has nothing that recent (a driver on a connection given to New,
// younger than reportLag), go-zookeeper's own pings stand in: one every
// timeout/3 while connected, taken a twelfth of the timeout late at worst,
// and a (re)connection renews the session at the leader itself. (That
// stand-in counts pings by their send times, which a stall of the client's
// direction defeats as it did the heartbeat's; go-zookeeper gives up a
// connection on which nothing has come back for 2/3 of the timeout, which
// bounds such a stall unless the server's events keep the connection up.
// It supports at most a third of the timeout, and beats the record only
// when no heartbeat read sent in the last 2/3 of the timeout has been
// answered reportLag before the proof.) The result
// is capped at steadyTTL, so that the TTLs a lease sees do not shrink when
// its session grows old: the portable layer sets its renew interval from
// the first. It is called once the proof's answer has come back, and
// records the proof as activity answered now.
func (d *Driver) provenTTL(sess int64, sent time.Time) time.Duration {
	timeout := d.ttl()
	base := sent.Add(-timeout/4 - timeout/3 - timeout/12)
	if t, ok := d.act.base(sess, sent, d.reportLag()); ok && t.After(base) {
		base = t
	}
	d.act.proved(sess, sent, time.Now())
	return min(timeout-sent.Sub(base), d.steadyTTL())
}

// steadyTTL is the TTL a proof supports while the heartbeat runs: the
// timeout less reportLag, less one heartbeat period, less another for the
// read's answer to come back: 5/8 of the timeout.
func (d *Driver) steadyTTL() time.Duration {
	timeout := d.ttl()
	return timeout - timeout/4 - 2*beatPeriod(timeout)
}

// beatPeriod is the heartbeat's period for a session timeout.
func beatPeriod(timeout time.Duration) time.Duration { return timeout / 16 }

// heartbeat sends a read every timeout/16 while the driver is open, so that
// the session always has recent activity the leader must have heard of.
// The read is answered by the connected server alone; that is enough, it
// only has to reach the server. The reads are sent on time whether or not
// the previous ones have been answered (up to beatsInFlight): the server
// answers a session's requests in order, so under load (a read queued
// behind a thousand-node renewal round) every read sent before a proof is
// answered, and recorded, about when the proof is; a beat that waited for
// the previous one's answer would leave the proof nothing recent enough.
// Seen at 1,000 locks on a 2 s session on a loaded machine.
func (d *Driver) heartbeat() {
	defer d.bg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	breaks := d.breaks.Load()
	inFlight := make(chan struct{}, beatsInFlight)
	for {
		select {
		case <-d.closing:
			return
		case <-d.connGone:
			return
		case <-t.C:
		}
		// Not in the tick after a reconnect: go-zookeeper re-sends its
		// watches then and reads the last zxid without a lock while answers
		// come in (a data race the race detector reports).
		b := d.breaks.Load()
		sess := d.conn.SessionID()
		sent := time.Now()
		if b == breaks && d.conn.State() == zk.StateHasSession {
			select {
			case inFlight <- struct{}{}:
				d.bg.Add(1)
				go d.beat(sess, sent, inFlight)
			default: // as many unanswered as the timeout holds: skip
			}
		}
		breaks = b
		t.Reset(max(time.Until(sent.Add(beatPeriod(d.ttl()))), time.Millisecond))
	}
}

// beatsInFlight bounds the heartbeat's unanswered reads: a timeout's worth.
const beatsInFlight = 16

// beat sends one heartbeat read and records it once answered.
func (d *Driver) beat(sess int64, sent time.Time, inFlight <-chan struct{}) {
	defer d.bg.Done()
	defer func() { <-inFlight }()
	if _, _, err := d.conn.Exists(d.root); err == nil && d.conn.SessionID() == sess {
		d.act.beat(sess, sent, time.Now())
	}
}

// startHeartbeat starts the heartbeat once the connection has a session;
// start is when the session was asked for, if known (its creation at the
// leader renews it from a later time).
func (d *Driver) startHeartbeat(start time.Time) {
	d.act.connected(d.conn.SessionID(), start)
	d.bg.Add(1)
	go d.heartbeat()
}

// onConnectEvent follows go-zookeeper's connection attempts on a connection
// the driver dialled, whose events it gets at once through the callback (a
// borrowed connection's come late through a channel): a session that
// reaches StateHasSession was renewed at the leader after the attempt began
// (ZooKeeper revalidates a session at the leader before it accepts the
// connection).
func (d *Driver) onConnectEvent(ev zk.Event) {
	if !d.owned {
		return
	}
	switch ev.State {
	case zk.StateConnecting:
		d.attemptAt.Store(time.Now().UnixNano())
	case zk.StateHasSession:
		if c := d.connP.Load(); c != nil {
			if at := d.attemptAt.Load(); at != 0 {
				d.act.connected(c.SessionID(), time.Unix(0, at))
			}
		}
	}
}
