package etcdlock

import clientv3 "go.etcd.io/etcd/client/v3"

// Client returns the etcd client the driver uses: the one given to New or
// NewDriver, or the one the URL opener made from an etcd:// or etcds:// URL
// (TLS and credentials included), which the driver closes on Close. It lets
// a program keep its own data in the same cluster on the same connection
// (`dlock demo` keeps its counter there). Do not close it.
func (d *Driver) Client() *clientv3.Client { return d.cli }
