package bench

import (
	"github.com/dlockio/dlock"
	"github.com/dlockio/dlock/etcdlock"
)

func dlockEtcd(e *Engines) []Contender {
	return []Contender{dlockContender("dlock-etcd", "etcd", "etcdlock.New(cli) per worker (a lease each, like a session each) on the shared etcd client",
		func() (*dlock.Client, error) { return etcdlock.New(e.Etcd.Client, nil) })}
}
