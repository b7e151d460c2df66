package redislock

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
)

// hub multiplexes the release channels of every waiter of one driver on a
// single pub/sub connection to one node, so that a thousand waiters cost one
// connection, not a thousand.
//
// A waiter must not miss a release that happens between its failed attempt
// and its wait, so it joins (and sees its SUBSCRIBE confirmed by the server)
// before the attempt it then waits on. SUBSCRIBE and UNSUBSCRIBE are written
// under mu, so their order on the wire is the order of the state changes
// here, and a channel counts as subscribed only once every SUBSCRIBE sent for
// it has been confirmed.
type hub struct {
	rdb    redis.UniversalClient
	prefix string // of this driver's waiter ids
	// named: a Redlock hub. Every node names the same waiter, so a
	// wake-up for one that has gone is a duplicate (it was woken by another
	// node, and took the lock or queued again) and is dropped: passing it on
	// anonymously would wake every client's oldest waiter, a herd that
	// splits the vote. A waiter that gives up wakes the next by name
	// instead (dequeue.lua, run when it abandons).
	named bool
	// bg tracks the hub's own requests (relays, give-backs of grants): the
	// driver's Close waits for them a moment.
	bg *sync.WaitGroup

	mu       sync.Mutex
	ps       *redis.PubSub
	loopDone chan struct{}
	closed   bool
	topics   map[string]*topic
	inflight map[string]int // SUBSCRIBEs sent and not yet confirmed, per channel
	// held: owner ids of this driver's waiters that took their lock up
	// and have not released it yet. A grant message for one of them that
	// arrives late (the waiter's own attempt found the lock already its)
	// must not be given back: that would delete a live lock.
	held map[string]struct{}
	// conn follows the node's connection for NotifyConn (conn.go), nil
	// without; lastSign is when the pub/sub connection last delivered
	// something (loop's alone).
	conn     *connWatch
	lastSign time.Time
}

type topic struct {
	waiters []*waiter // oldest first: a release wakes the oldest
	// watchers follow a channel on which every message is for all of them
	// (an election's observers: observe.go). A channel has waiters or
	// watchers, never both.
	watchers  []*watcher
	confirmed chan struct{} // closed when the server has confirmed the subscription
}

// watcher is one observer on a hub: every message on its channel, and
// every (re)subscription, wakes it to read the state again.
type watcher struct {
	wake chan struct{} // buffered 1: wake-ups coalesce, the hub never blocks
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func newHub(rdb redis.UniversalClient, prefix string, named bool, bg *sync.WaitGroup) *hub {
	return &hub{rdb: rdb, prefix: prefix, named: named, bg: bg, topics: map[string]*topic{}, inflight: map[string]int{},
		held: map[string]struct{}{}}
}

// setConn makes the hub tell w of its pub/sub connection's drops.
func (h *hub) setConn(w *connWatch) {
	h.mu.Lock()
	h.conn = w
	h.mu.Unlock()
}

// took records that the waiter owner took its lock up (single node).
func (h *hub) took(owner string) {
	h.mu.Lock()
	h.held[owner] = struct{}{}
	h.mu.Unlock()
}

// forget ends what took recorded, once the lock is no longer owner's.
func (h *hub) forget(owner string) {
	h.mu.Lock()
	delete(h.held, owner)
	h.mu.Unlock()
}

// subscribeTimeout bounds a SUBSCRIBE or UNSUBSCRIBE write. It is not the
// waiter's context: a write cut short by one waiter's deadline would make
// go-redis drop and re-dial the connection every waiter of the driver
// shares.
const subscribeTimeout = 5 * time.Second

// join adds w to the waiters of channel and returns a channel that is
// closed once the server has confirmed the subscription; the hub also
// signals w then. On error w is not joined.
func (h *hub) join(ctx context.Context, channel string, w *waiter) (<-chan struct{}, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, err := h.subscribe(ctx, channel)
	if err != nil {
		return nil, err
	}
	t.waiters = append(t.waiters, w)
	select {
	case <-t.confirmed:
		// Subscribed already, for another waiter: w looks again now, as it
		// would at the confirmation, and that look queues it. Without
		// this it slept unqueued until the holder's expiry, and a release
		// meanwhile (which hands over to queued waiters only) passed it by.
		w.signal()
	default:
	}
	return t.confirmed, nil
}

// watch adds w to the watchers of channel, as join does for a waiter.
func (h *hub) watch(ctx context.Context, channel string, w *watcher) (<-chan struct{}, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, err := h.subscribe(ctx, channel)
	if err != nil {
		return nil, err
	}
	t.watchers = append(t.watchers, w)
	return t.confirmed, nil
}

// unwatch removes w, and unsubscribes from channel if nobody else follows it.
func (h *hub) unwatch(channel string, w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[channel]
	if t == nil {
		return
	}
	for i, x := range t.watchers {
		if x == w {
			t.watchers = append(t.watchers[:i:i], t.watchers[i+1:]...)
			break
		}
	}
	if len(t.watchers) == 0 && len(t.waiters) == 0 {
		h.drop(channel)
	}
}

// subscribe returns the topic of channel, subscribing (and starting the
// pub/sub connection) if nobody follows it yet. h.mu held.
func (h *hub) subscribe(ctx context.Context, channel string) (*topic, error) {
	if h.closed {
		return nil, driver.ErrClosed
	}
	if h.ps == nil {
		h.ps = h.rdb.Subscribe(context.WithoutCancel(ctx))
		ch := h.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
		h.loopDone = make(chan struct{})
		go h.loop(h.ps, ch, h.loopDone)
	}
	t := h.topics[channel]
	if t == nil {
		t = &topic{confirmed: make(chan struct{})}
		h.inflight[channel]++
		// Subscribe only writes the command; the confirmation comes to loop.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), subscribeTimeout)
		err := h.ps.Subscribe(sctx, channel)
		cancel()
		if err != nil {
			if h.inflight[channel]--; h.inflight[channel] <= 0 {
				delete(h.inflight, channel)
			}
			return nil, err
		}
		h.topics[channel] = t
	}
	return t, nil
}

// leave removes w. If w holds a wake-up it did not act on, or passOn says it
// consumed one without settling who holds the lock, the wake-up goes to the
// next waiter so that a release is never swallowed by a waiter that left.
func (h *hub) leave(channel string, w *waiter, passOn bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[channel]
	if t == nil {
		return
	}
	for i, x := range t.waiters {
		if x == w {
			t.waiters = append(t.waiters[:i:i], t.waiters[i+1:]...)
			break
		}
	}
	select {
	case <-w.wake:
		passOn = true
	default:
	}
	if h.named || w.fresh() != nil {
		// A granted waiter that leaves releases its grant, which passes
		// the lock on by itself.
		passOn = false
	}
	if len(t.waiters) > 0 {
		if passOn {
			t.wakeOne()
		}
		return
	}
	if passOn {
		h.relay(channel)
	}
	if len(t.watchers) == 0 {
		h.drop(channel)
	}
}

// drop unsubscribes from channel once nobody waits on it. While a
// SUBSCRIBE is unconfirmed the topic stays (loop drops it at the
// confirmation): an UNSUBSCRIBE and a second SUBSCRIBE behind it would
// leave two confirmations due, of which a reconnect delivers only one, and
// later waiters would wait for the other forever. h.mu held.
func (h *hub) drop(channel string) {
	if h.inflight[channel] > 0 {
		return
	}
	delete(h.topics, channel)
	if !h.closed {
		// Best effort: a stale subscription only costs ignored messages.
		ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
		_ = h.ps.Unsubscribe(ctx, channel)
		cancel()
	}
}

// wakeOne wakes the oldest waiter. One wake-up per release is enough: the
// woken waiter either takes the lock or finds a new holder, whose release
// will wake the next one.
// If the oldest already has a wake-up pending, its attempt will see this
// release too.
func (t *topic) wakeOne() {
	if len(t.waiters) > 0 {
		t.waiters[0].signal()
	}
}

// deliver wakes the waiter a release names, or the oldest waiter if it
// names none. A named waiter of this driver that has left passes the
// wake-up on: to another waiter here, or to every client's waiters.
// h.mu held.
func (h *hub) deliver(m *redis.Message) {
	t := h.topics[m.Channel]
	if t != nil && len(t.watchers) > 0 {
		for _, w := range t.watchers {
			w.signal()
		}
		return
	}
	if owner, g, ok := parseGrant(m.Payload); ok {
		if t != nil {
			for _, w := range t.waiters {
				if w.id == owner {
					if g.token <= w.floor.Load() {
						return // stale: the waiter has seen another holder since
					}
					if old := w.grant.Load(); old == nil || old.token < g.token {
						w.grant.Store(g)
					}
					w.signal()
					return
				}
			}
		}
		if _, ok := h.held[owner]; ok {
			return // the waiter took the lock up by its own attempt
		}
		if strings.HasPrefix(owner, h.prefix) {
			// Ours, but its waiter gave up: the lock must not stay with
			// nobody until its TTL runs out. (If the grant is stale the
			// owner-checked release finds another owner and does nothing.)
			h.releaseGrant(m.Channel, owner, g)
		}
		return
	}
	if owner, d, ok := parseDeferral(m.Payload); ok {
		if t != nil {
			for _, w := range t.waiters {
				if w.id == owner {
					w.deferTo.Store(time.Now().Add(d).UnixNano())
					w.signal()
					return
				}
			}
		}
		// A waiter that has left: its dequeue finds it queued and passes
		// the lock on (sdequeue.lua).
		return
	}
	if m.Payload == "" {
		if t != nil {
			t.wakeOne()
		}
		return
	}
	if t != nil {
		for _, w := range t.waiters {
			if w.id == m.Payload {
				w.signal()
				return
			}
		}
	}
	if h.named || !strings.HasPrefix(m.Payload, h.prefix) {
		return // another client's waiter, or a Redlock duplicate
	}
	if t != nil && len(t.waiters) > 0 {
		t.wakeOne()
		return
	}
	h.relay(m.Channel)
}

// relay publishes an anonymous wake-up on channel, for a wake-up that
// reached a waiter that had gone. h.mu held.
func (h *hub) relay(channel string) {
	if h.closed {
		return
	}
	h.bg.Go(func() {
		ctx, cancel := driver.CleanupContext(context.Background())
		defer cancel()
		_ = h.rdb.Publish(ctx, channel, "").Err()
	})
}

// releaseGrant gives back a lock granted to a waiter of this driver that
// has gone. h.mu held.
func (h *hub) releaseGrant(channel, owner string, g *grant) {
	if h.closed {
		return
	}
	tag, ok := strings.CutSuffix(channel, releasedSuffix)
	if !ok {
		return
	}
	h.bg.Go(func() {
		ctx, cancel := driver.CleanupContext(context.Background())
		defer cancel()
		_ = releaseScript.Run(ctx, h.rdb, keysOfTag(tag).single(), owner, channel, ttlMillis(g.ttl), 0).Err()
	})
}

func (h *hub) loop(ps *redis.PubSub, ch <-chan interface{}, done chan struct{}) {
	defer close(done)
	defer h.lost(ps)
	for m := range ch {
		switch m := m.(type) {
		case *redis.Message:
			h.mu.Lock()
			h.deliver(m)
			conn := h.conn
			h.mu.Unlock()
			h.lastSign = time.Now()
			if conn != nil {
				conn.answered(h.lastSign)
			}
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			h.mu.Lock()
			// The first confirmation on a connection counts 1; for a
			// channel confirmed already it is go-redis's resubscription on
			// the connection that replaced a dropped one.
			t := h.topics[m.Channel]
			resub := m.Count == 1 && h.inflight[m.Channel] == 0 && t != nil && isClosed(t.confirmed)
			conn, last := h.conn, h.lastSign
			n := h.inflight[m.Channel]
			if n > 0 {
				n--
				if n == 0 {
					delete(h.inflight, m.Channel)
				} else {
					h.inflight[m.Channel] = n
				}
			}
			if t := h.topics[m.Channel]; t != nil && n == 0 {
				select {
				case <-t.confirmed:
					// A resubscription after a reconnect: releases may have
					// been missed meanwhile, so everyone looks again.
				default:
					close(t.confirmed)
				}
				for _, w := range t.waiters {
					w.signal()
				}
				for _, w := range t.watchers {
					w.signal()
				}
				if len(t.waiters) == 0 && len(t.watchers) == 0 {
					h.drop(m.Channel)
				}
			}
			h.mu.Unlock()
			h.lastSign = time.Now()
			switch {
			case conn == nil:
			case resub:
				conn.pubsubReconnected(last)
			default:
				conn.answered(h.lastSign)
			}
		}
	}
}

// isClosed reports whether c is closed.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// lost handles the end of ps's messages. Unless the hub closed it, go-redis
// did: the user closed the client. Every waiter is woken to try again and
// learn that, rather than sleep until its timer; a later join starts over.
func (h *hub) lost(ps *redis.PubSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.ps != ps {
		return
	}
	h.ps = nil
	_ = ps.Close() // stops go-redis's health check
	for _, t := range h.topics {
		for _, w := range t.waiters {
			w.signal()
		}
		for _, w := range t.watchers {
			w.signal()
		}
	}
	clear(h.topics)
	clear(h.inflight)
}

// close stops the pub/sub connection; later joins return driver.ErrClosed.
func (h *hub) close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	clear(h.held)
	ps, done := h.ps, h.loopDone
	h.mu.Unlock()
	if ps == nil {
		return nil
	}
	err := ps.Close()
	<-done
	return err
}
