package etcdlock

import (
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/lockname"
)

// Keys. Every key of a driver is under its prefix; the lock name N owns
// the range
//
//	<prefix>/<lockname.Escape(N)>/
//
// in which each waiter and each holder has one key, with an empty value,
// bound to the driver's lease. The kind of the entry is in the key's name:
//
//	<prefix>/<lockname.Escape(N)>/<lease id, hex>-<seq>          a writer (a mutex)
//	<prefix>/<lockname.Escape(N)>/r/<lease id, hex>-<seq>        a reader
//	<prefix>/<lockname.Escape(N)>/s<limit>/<lease id, hex>-<seq> one of <limit> permits
//
// A writer's key is the mutex's, as before read-write locks existed. Lease
// ids are positive and written in lower-case hex, so every writer key sorts
// before "r" and the writers of N are the range [<N's range>, <N's range>r):
// a reader finds the last writer ahead of it with one bounded read. The
// permits of a limit share a prefix that no other limit's prefix contains
// ("s5/" against "s50/"), so "every key of N is a permit of this limit" is
// two empty ranges, which a transaction can compare.
//
// The escaped name never holds '/', so no name's range holds another
// name's keys ("a" and "a/b"). The lease id and the driver's sequence
// number make a key that no other driver writes, so a key whose creation
// is in doubt may be deleted by name (lock.remove).

// namePrefix is the key range of one lock name.
func (d *Driver) namePrefix(name string) string {
	return d.root + lockname.Escape(name, 0) + "/" // etcd keys have no length limit of their own
}

// queueKey is a new key for a name's range pfx on lease ls, for a request
// of mode and limit.
func (d *Driver) queueKey(pfx string, mode driver.Mode, limit int, ls *lease) string {
	return fmt.Sprintf("%s%x-%d", kindPrefix(pfx, mode, limit), int64(ls.id), d.seq.Add(1))
}

// kindPrefix is where the keys of one kind of request live in pfx.
func kindPrefix(pfx string, mode driver.Mode, limit int) string {
	switch {
	case limit > 0:
		return pfx + "s" + strconv.Itoa(limit) + "/"
	case mode == driver.Shared:
		return pfx + "r/"
	}
	return pfx
}

// writersEnd ends the range of a name's writer keys, which starts at pfx.
func writersEnd(pfx string) string { return pfx + "r" }

// permitsRange is the range [start, end) of a name's permit keys, of any
// limit.
func permitsRange(pfx string) (string, string) { return pfx + "s", pfx + "t" }

// keyLimit is the limit of a key of pfx: n for one of n permits, 0 for a
// reader's or a writer's key, -1 for a key of no known kind.
func keyLimit(pfx, key string) int {
	rest, ok := strings.CutPrefix(key, pfx+"s")
	if !ok {
		return 0
	}
	n, _, ok := strings.Cut(rest, "/")
	if !ok {
		return -1
	}
	v, err := strconv.Atoi(n)
	if err != nil || v < 1 {
		return -1
	}
	return v
}

// isWriter says whether key is a writer's key of pfx (a mutex's, an
// election candidate's).
func isWriter(pfx, key string) bool { return key >= pfx && key < writersEnd(pfx) }

// isReader says whether key is a reader's key of pfx.
func isReader(pfx, key string) bool { return strings.HasPrefix(key, pfx+"r/") }

// guard is the condition on which a request of limit may queue under pfx:
// a lock's (limit 0) that the name has no permit keys, a semaphore's that
// every key of the name is a permit of the same limit. conflict reads, in
// the same transaction, a key that broke it.
func guard(pfx string, limit int) (cmps []clientv3.Cmp, conflict []clientv3.Op) {
	empty := func(start, end string) {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(start), "=", 0).WithRange(end))
		conflict = append(conflict, clientv3.OpGet(start, clientv3.WithRange(end), clientv3.WithLimit(1), clientv3.WithKeysOnly()))
	}
	if limit == 0 {
		empty(permitsRange(pfx))
		return cmps, conflict
	}
	own := kindPrefix(pfx, driver.Exclusive, limit)
	empty(pfx, own)
	empty(clientv3.GetPrefixRangeEnd(own), clientv3.GetPrefixRangeEnd(pfx))
	return cmps, conflict
}

// mismatch is the error for a request of limit asked (0: a lock) on a name
// whose key found says it is held or awaited under another limit, or nil if
// found is "".
func mismatch(name, pfx string, asked int, found string) error {
	if found == "" {
		return nil
	}
	what := func(n int) string {
		switch {
		case n == 0:
			return "a lock"
		case n < 0:
			return "something this build does not know"
		}
		return fmt.Sprintf("a semaphore of %d permits", n)
	}
	got := keyLimit(pfx, found)
	return fmt.Errorf("etcdlock: %q: %w", name, driver.InvalidArgument("limit", asked,
		fmt.Sprintf("%d: the name is held or awaited as %s (key %q), not as %s", got, what(got), found, what(asked))))
}
