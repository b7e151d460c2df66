package safety

import (
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a tiny TCP proxy between the clients and one engine server that
// can cut, slow or stall the traffic: toxiproxy's three faults we need, in
// a hundred lines and no new module.
type proxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	latency time.Duration
	stalled chan struct{} // non-nil during a partition: bytes wait until it closes
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newProxy(tb testing.TB, upstream string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// Addr is where clients connect.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Partition stalls all traffic, both ways, until Heal: a partition that TCP
// rides out by retransmitting, so clients see timeouts, not resets.
func (p *proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
}

// Heal ends a partition.
func (p *proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
}

// SetLatency delays every chunk of data by d, each way.
func (p *proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Reset closes every open connection (the clients reconnect).
func (p *proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.Heal()
	p.Reset()
	p.wg.Wait()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", p.upstream, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

// pipe copies from src to dst through the faults; either side's end closes both.
func (p *proxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		src.Close()
		dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			stalled, lat := p.stalled, p.latency
			p.mu.Unlock()
			if stalled != nil {
				<-stalled
			}
			if lat > 0 {
				time.Sleep(lat) // the injected latency itself
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or closed: either way this direction is over
			return
		}
	}
}
