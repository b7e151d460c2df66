package zklock

import "github.com/go-zookeeper/zk"

// Conn returns the ZooKeeper connection (the session) the driver uses: the
// one given to New, or the one Dial or the URL opener made (credentials
// included), which the driver closes on Close. It lets a program keep its
// own data in the same ensemble on the same session (`dlock demo` keeps its
// counter there). Do not close it.
func (d *Driver) Conn() *zk.Conn { return d.conn }

// Conn returns the connection of the newest session (Dial and zk:// keep a
// session per distinct TTL). Dial's first session is closed once a lock
// asks for another TTL and none used it: call Conn for each use rather than
// keeping what it returned.
func (p *perTTL) Conn() *zk.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest.conn
}
