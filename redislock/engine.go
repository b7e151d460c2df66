package redislock

import "github.com/redis/go-redis/v9"

// Clients returns the go-redis clients the driver uses, one per node in the
// order given (one for a single node): the ones given to New, NewRedlock or
// NewDriver, or the ones the URL opener made (TLS and credentials
// included), which the driver closes on Close. It lets a program keep its
// own data on the same servers and connections (`dlock demo` keeps its
// counter on the first node). Do not close them.
func (d *Driver) Clients() []redis.UniversalClient {
	cs := make([]redis.UniversalClient, len(d.nodes))
	for i, n := range d.nodes {
		cs[i] = n.rdb
	}
	return cs
}
