package zklock

import (
	"sync"

	"github.com/go-zookeeper/zk"
)

// blipHostProvider is go-zookeeper's DNSHostProvider but for the first
// reconnect after a connection was up: that one is tried at once, even when
// it comes round to the same server. go-zookeeper sleeps a second before
// every round of the server list, and on a one-server ensemble every
// reconnect is a new round: a reset connection (a blip) then cost a second
// before the session could resume, longer than what is left of a short
// lease's validity, so the lease was lost (ConnectionReset/WhileHeld on a
// 2 s session). A longer outage still backs off a second a round after
// that first try.
type blipHostProvider struct {
	*zk.DNSHostProvider
	mu    sync.Mutex
	fresh bool // Connected was called, and Next not since
}

func newBlipHostProvider() *blipHostProvider {
	return &blipHostProvider{DNSHostProvider: &zk.DNSHostProvider{}}
}

// NewHostProvider returns the zk.HostProvider the driver's own connections
// use, for a connection given to New: pass zk.WithHostProvider(
// zklock.NewHostProvider()) to zk.Connect. It reconnects at once after a
// connection reset even on a one-server ensemble, where go-zookeeper's own
// waits a second first — longer than a short lease may have left.
func NewHostProvider() zk.HostProvider { return newBlipHostProvider() }

func (p *blipHostProvider) Connected() {
	p.DNSHostProvider.Connected()
	p.mu.Lock()
	p.fresh = true
	p.mu.Unlock()
}

func (p *blipHostProvider) Next() (server string, retryStart bool) {
	server, retryStart = p.DNSHostProvider.Next()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fresh {
		p.fresh = false
		return server, false
	}
	return server, retryStart
}
