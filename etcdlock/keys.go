package etcdlock

import (
	"fmt"

	"github.com/dlockio/dlock/internal/lockname"
)

// Keys. Every key of a driver is under its prefix; the lock name N owns
// the range
//
//	<prefix>/<lockname.Escape(N)>/
//
// in which each waiter and the holder have one key, with an empty value,
// bound to the driver's lease:
//
//	<prefix>/<lockname.Escape(N)>/<lease id, hex>-<sequence number>
//
// The escaped name never holds '/', so no name's range holds another
// name's keys ("a" and "a/b"). The lease id and the driver's sequence
// number make a key that no other driver writes, so a key whose creation
// is in doubt may be deleted by name (lock.remove).

// namePrefix is the key range of one lock name.
func (d *Driver) namePrefix(name string) string {
	return d.root + lockname.Escape(name, 0) + "/" // etcd keys have no length limit of their own
}

// queueKey is a new key for name's range pfx on lease ls.
func (d *Driver) queueKey(pfx string, ls *lease) string {
	return fmt.Sprintf("%s%x-%d", pfx, int64(ls.id), d.seq.Add(1))
}
