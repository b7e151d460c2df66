package zklock

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// session is one ZooKeeper session of the connection. Every lock taken in
// it shares its lost channel, and the session keeps its held locks (add,
// drop), so an expiry ends them all at once.
type session struct {
	id   int64
	lost chan struct{}
	once sync.Once

	mu      sync.Mutex
	isEnded bool
	held    map[*zkLock]struct{}
}

func newSession(id int64) *session { return &session{id: id, lost: make(chan struct{})} }

// end ends the session and reports its held locks lost.
func (s *session) end() {
	s.once.Do(func() {
		close(s.lost)
		s.mu.Lock()
		s.isEnded = true
		held := s.held
		s.held = nil
		s.mu.Unlock()
		for l := range held {
			l.markLost()
		}
	})
}

func (s *session) ended() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

var (
	errSessionEnded = errors.New("zklock: the ZooKeeper session that held the node has ended")
	errConnClosed   = errors.New("zklock: the *zk.Conn given to New was closed by its owner")
)

// onEvent follows the connection's session. go-zookeeper calls it from its
// own goroutines: it must not block.
func (d *Driver) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		d.onNodeEvent(ev)
		return
	}
	if ev.State != zk.StateHasSession {
		d.breaks.Add(1)
	}
	d.onConnectEvent(ev)
	switch ev.State {
	case zk.StateConnecting:
		// go-zookeeper starts each connection attempt with this event:
		// one more than there are servers means a whole round failed.
		if d.attempts.Add(1) > int64(d.nservers) {
			d.noServerOnce.Do(func() { close(d.noServer) })
		}
	case zk.StateHasSession:
		if c := d.connP.Load(); c != nil {
			d.bind(c.SessionID())
		}
		if !d.owned {
			d.probeAfterConnect() // another server may grant another timeout
		}
	case zk.StateExpired:
		d.mu.Lock()
		d.sess.end()
		d.sess = newSession(0)
		d.mu.Unlock()
	}
}

// drain feeds a borrowed connection's event channel to onEvent.
func (d *Driver) drain(events <-chan zk.Event) {
	defer d.bg.Done()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				// go-zookeeper closes the channel once the connection is
				// closed: its session is over.
				d.connClosed()
				d.mu.Lock()
				d.sess.end()
				d.mu.Unlock()
				return
			}
			d.onEvent(ev)
		case <-d.closing:
			return
		}
	}
}

// bind records that the connection has session id. A different id than the
// current one means the old session is gone (go-zookeeper silently opens a
// new session after an expiry), whether or not the expiry event was seen.
func (d *Driver) bind(id int64) *session {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id == 0 {
		return d.sess
	}
	switch d.sess.id {
	case id:
	case 0:
		d.sess.id = id
	default:
		d.sess.end()
		d.sess = newSession(id)
	}
	select {
	case <-d.connected:
	default:
		close(d.connected)
	}
	return d.sess
}

// sessionOf returns the session that owns a node, given the node's
// ephemeralOwner; a session that is no longer the connection's comes back
// already ended.
func (d *Driver) sessionOf(owner int64) *session {
	if owner == 0 || owner != d.conn.SessionID() {
		s := newSession(owner)
		s.end()
		return s
	}
	return d.bind(owner)
}

// awaitSession waits for the connection's first session. With failFast it
// gives up, with a transient error, once every server has been tried and
// none gave a session.
func (d *Driver) awaitSession(ctx context.Context, failFast bool) error {
	d.bind(d.conn.SessionID()) // the event may have come before d.conn was set
	var noServer <-chan struct{}
	if failFast {
		noServer = d.noServer
	}
	select {
	case <-d.connected:
		return nil
	case <-noServer:
		select {
		case <-d.connected: // both: the session won
			return nil
		default:
		}
		return driver.Unavailable(fmt.Errorf("zklock: waiting for a ZooKeeper session: %w", zk.ErrNoServer))
	case <-ctx.Done():
		return fmt.Errorf("zklock: waiting for a ZooKeeper session: %w", ctx.Err())
	}
}
