package safety

import (
	"sync"
	"testing"
	"time"

	"github.com/dlockio/dlock/internal/faultproxy"
)

// proxy stands between one worker and one engine server: internal/
// faultproxy with the faults the scenarios use, on all of the worker's
// connections or on one kind of them.
type proxy struct {
	*faultproxy.Proxy

	mu        sync.Mutex
	partition func() // undoes the current partition
	latency   func() // undoes the current latency
}

func newProxy(tb testing.TB, upstream string) *proxy {
	tb.Helper()
	p, err := faultproxy.Start(upstream)
	if err != nil {
		tb.Fatal(err)
	}
	px := &proxy{Proxy: p}
	tb.Cleanup(px.close)
	return px
}

// Partition stalls all traffic, both ways, until Heal: a partition that TCP
// rides out, so clients see timeouts, not resets.
func (p *proxy) Partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.partition == nil {
		p.partition = p.Add(faultproxy.Any, faultproxy.Fault{Stall: true})
	}
}

// Heal ends a partition.
func (p *proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.partition != nil {
		p.partition()
		p.partition = nil
	}
}

// SetLatency delays every byte by d, each way (0 removes the delay).
func (p *proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.latency != nil {
		p.latency()
		p.latency = nil
	}
	if d > 0 {
		p.latency = p.Add(faultproxy.Any, faultproxy.Fault{Delay: d})
	}
}

// Reset closes every open connection (the clients reconnect).
func (p *proxy) Reset() { p.Proxy.Reset(faultproxy.Any) }

func (p *proxy) close() { p.Proxy.Close() }
