package zklock

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"

	"github.com/dlockio/dlock/internal/lockname"
)

// Layout: <root>/<escaped name>/_c_<guid>-lock-<sequence>.
//
// The name is escaped by internal/lockname with a limit of 200 bytes: every
// byte but [A-Za-z0-9_-] as %XX, so "/", ".", NUL and control characters
// never appear raw and distinct names stay distinct ("a/b" is a%2Fb, "a%2Fb"
// is a%252Fb); a name whose escaped form is longer becomes "~" + its hex
// SHA-256, keeping the node's path well below ZooKeeper's limits. That is,
// byte for byte, what this package wrote before lockname was shared by the
// drivers: locks taken by earlier versions are seen by this one.
//
// The "_c_<guid>-" prefix is Curator's "protected" marker: a create whose
// reply was lost is found again by its guid instead of being left behind as
// an orphan that would block the queue until the session ends
// (samuel/go-zookeeper#229).
const (
	protectedPrefix = "_c_"
	lockInfix       = "-lock-"
	guidLen         = 32
	maxEncodedName  = 200 // longer escaped names are hashed
)

// encodeName is the node name of lock name under the root.
func encodeName(name string) string { return lockname.Escape(name, maxEncodedName) }

// parent is the path of lock name's queue: a container under the root.
func (d *Driver) parent(name string) string { return d.root + "/" + encodeName(name) }

func newGUID() string {
	var g [guidLen / 2]byte
	rand.Read(g[:])
	return hex.EncodeToString(g[:])
}

// nodePrefix is the name the driver asks to create; the server appends the
// sequence number.
func nodePrefix(guid string) string { return protectedPrefix + guid + lockInfix }

// entry is one queue node under a lock's parent.
type entry struct {
	name string
	guid string
	seq  int64
}

// parseEntry reads a queue node's name; ok is false for nodes that are not
// ours (the parent may be shared with nothing else, but be strict).
func parseEntry(name string) (entry, bool) {
	rest, ok := strings.CutPrefix(name, protectedPrefix)
	if !ok || len(rest) < guidLen+len(lockInfix)+1 {
		return entry{}, false
	}
	guid, rest := rest[:guidLen], rest[guidLen:]
	digits, ok := strings.CutPrefix(rest, lockInfix)
	if !ok {
		return entry{}, false
	}
	seq, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return entry{}, false
	}
	return entry{name: name, guid: guid, seq: seq}, true
}

// queue returns the lock nodes among children in grant order.
func queue(children []string) []entry {
	q := make([]entry, 0, len(children))
	for _, c := range children {
		if e, ok := parseEntry(c); ok {
			q = append(q, e)
		}
	}
	sort.Slice(q, func(i, j int) bool { return q[i].seq < q[j].seq })
	return q
}
