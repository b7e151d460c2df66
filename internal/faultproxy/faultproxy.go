// Package faultproxy is a TCP proxy for tests that puts faults on single
// connections. Every connection a client opens through the proxy gets its
// own pipe to the server, and a fault — added latency, a stall (traffic held
// until the fault is removed: a partition that TCP rides out) or a reset —
// applies to the connections it matches, chosen by what the client has sent
// on them. So a test can slow only a Redis client's pub/sub connection
// (Sent("SUBSCRIBE")), only its command connection, or everything.
//
// Latency is a delay line, not a throughput limit: each chunk of bytes is
// forwarded its delay after it was read, in order, while later chunks are
// already being read.
package faultproxy

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// Direction says which way a fault acts.
type Direction int

const (
	Both Direction = iota // client to server and back
	Up                    // client to server only
	Down                  // server to client only
)

// Fault is what happens to the bytes of the connections a rule matches.
type Fault struct {
	Delay time.Duration // added to every chunk's trip
	Stall bool          // hold every chunk until the fault is removed
	Dir   Direction
}

// Match chooses connections.
type Match func(c *Conn) bool

// Any matches every connection.
func Any(*Conn) bool { return true }

// Sent matches connections on which the client has sent s, in any case
// (go-redis writes "subscribe", redis-cli "SUBSCRIBE"), looked for in the
// first 64 KiB the client sent. A connection matches from the moment the
// bytes that contain s have been read; those bytes are the first the fault
// acts on.
func Sent(s string) Match {
	return func(c *Conn) bool { return c.sent(s) }
}

// Not matches the connections m does not match.
func Not(m Match) Match { return func(c *Conn) bool { return !m(c) } }

// Proxy forwards connections from Addr to one upstream address.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	conns   map[*Conn]struct{}
	rules   map[*rule]struct{}
	refuse  bool
	closed  bool
	changed chan struct{} // closed and replaced whenever the rules change
	nextID  int
	wg      sync.WaitGroup
}

type rule struct {
	m Match
	f Fault
}

// Conn is one proxied client connection.
type Conn struct {
	ID               int // in order of acceptance, from 1
	client, upstream net.Conn

	mu     sync.Mutex
	prefix []byte // what the client sent, up to prefixMax, in lower case
}

const prefixMax = 64 << 10

func (c *Conn) sent(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Contains(c.prefix, bytes.ToLower([]byte(s)))
}

// Start listens on a free port of 127.0.0.1 and forwards to upstream.
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[*Conn]struct{}{}, rules: map[*rule]struct{}{}, changed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Upstream is the server's address.
func (p *Proxy) Upstream() string { return p.upstream }

// Add puts f on the connections m matches, current and future, until
// remove is called (remove may be called more than once).
func (p *Proxy) Add(m Match, f Fault) (remove func()) {
	r := &rule{m: m, f: f}
	p.mu.Lock()
	p.rules[r] = struct{}{}
	p.notifyLocked()
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.rules, r)
		p.notifyLocked()
		p.mu.Unlock()
	}
}

// Clear removes every fault.
func (p *Proxy) Clear() {
	p.mu.Lock()
	clear(p.rules)
	p.notifyLocked()
	p.mu.Unlock()
}

// Reset closes the connections m matches at once (the client sees a reset
// or EOF) and returns how many it closed.
func (p *Proxy) Reset(m Match) int {
	p.mu.Lock()
	var hit []*Conn
	for c := range p.conns {
		if m(c) {
			hit = append(hit, c)
		}
	}
	p.mu.Unlock()
	for _, c := range hit {
		c.abort()
	}
	return len(hit)
}

// Refuse makes the proxy close every new connection at once (on) — a
// server that is down — or accept them again (off).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Conns returns the open connections.
func (p *Proxy) Conns() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Conn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	clear(p.rules)
	p.notifyLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	p.Reset(Any)
	p.wg.Wait()
	return err
}

func (p *Proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse || p.closed
		p.mu.Unlock()
		if refuse {
			abortConn(cc)
			continue
		}
		uc, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
		if err != nil {
			abortConn(cc)
			continue
		}
		p.mu.Lock()
		// Refuse (or Close) may have come while we dialled: a connection
		// that is not yet in p.conns escapes the Reset that goes with it,
		// so it must not be registered now.
		if p.closed || p.refuse {
			p.mu.Unlock()
			abortConn(cc)
			abortConn(uc)
			continue
		}
		p.nextID++
		c := &Conn{ID: p.nextID, client: cc, upstream: uc}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, Up)
		go p.pipe(c, Down)
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe forwards one direction of c: a reader fills a queue, this goroutine
// writes each chunk out once the faults let it.
func (p *Proxy) pipe(c *Conn, dir Direction) {
	defer p.wg.Done()
	src, dst := c.client, c.upstream
	if dir == Down {
		src, dst = c.upstream, c.client
	}
	q := make(chan chunk, 4096)
	done := make(chan struct{})
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				if dir == Up {
					c.mu.Lock()
					if room := prefixMax - len(c.prefix); room > 0 {
						c.prefix = append(c.prefix, bytes.ToLower(buf[:min(n, room)])...)
					}
					c.mu.Unlock()
				}
				select {
				case q <- chunk{buf[:n], time.Now()}:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(done)
		c.abort()
		for range q { // let the reader finish
		}
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	for ch := range q {
		if !p.hold(c, dir, ch.at) {
			return
		}
		if _, err := dst.Write(ch.b); err != nil {
			return
		}
	}
	// The source ended: pass the half-close on where TCP allows.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// hold waits until a chunk read at 'at' may go: past every matching delay
// and with no matching stall. It returns false if the proxy closed.
func (p *Proxy) hold(c *Conn, dir Direction, at time.Time) bool {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return false
		}
		changed := p.changed
		var delay time.Duration
		stall := false
		for r := range p.rules {
			if (r.f.Dir == Both || r.f.Dir == dir) && r.m(c) {
				delay = max(delay, r.f.Delay)
				stall = stall || r.f.Stall
			}
		}
		p.mu.Unlock()
		if stall {
			<-changed
			continue
		}
		wait := time.Until(at.Add(delay))
		if wait <= 0 {
			return true
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
			return true
		case <-changed:
			t.Stop()
		}
	}
}

func (c *Conn) abort() {
	abortConn(c.client)
	abortConn(c.upstream)
}

// abortConn closes with a reset rather than a FIN, as a dead peer would.
func abortConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
