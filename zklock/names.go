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
//
// The guid's first characters say what the node asks for (see kind): a
// lock's writer, a mutex, has a plain hex guid, as every earlier version
// wrote it; a reader's starts with "__READ__" (Curator's marker), a
// semaphore permit's with "__S<limit>__". The marker lives inside the guid
// rather than in a new infix so that every node still parses as
// _c_<32 characters>-lock-<sequence>: an earlier version, which knows no
// marker, sees readers and permits as queue nodes like its own and waits
// behind them as a writer would, instead of overlooking them. Hex has no
// "_", so no plain guid is ever read as a marker.
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

func newGUID() string { return randomHex(guidLen) }

// randomHex returns n random hex digits.
func randomHex(n int) string {
	g := make([]byte, (n+1)/2)
	rand.Read(g)
	return hex.EncodeToString(g)[:n]
}

const (
	readMarker = "__READ__"
	semPrefix  = "__S"
	semSuffix  = "__"
)

// maxLimit is the largest semaphore limit a node name carries: 9 digits,
// an int on every platform, which leave a permit's guid 32 - 3 - 9 - 2 = 18
// random hex digits (72 bits) at least.
const maxLimit = 999_999_999

// guidFor returns a fresh guid that carries k's marker.
func guidFor(k kind) string {
	switch {
	case k.limit > 0:
		m := semPrefix + strconv.Itoa(k.limit) + semSuffix
		return m + randomHex(guidLen-len(m))
	case k.shared:
		return readMarker + randomHex(guidLen-len(readMarker))
	}
	return newGUID()
}

// kindOf reads the marker of a guid. A guid that is neither plain hex nor
// a marker this version knows is taken for a writer: it blocks everyone,
// which is safe, rather than being overlooked.
func kindOf(guid string) kind {
	if strings.HasPrefix(guid, readMarker) {
		return kind{shared: true}
	}
	if rest, ok := strings.CutPrefix(guid, semPrefix); ok {
		if digits, _, ok := strings.Cut(rest, semSuffix); ok {
			if n, err := strconv.Atoi(digits); err == nil && n > 0 && n <= maxLimit {
				return kind{limit: n}
			}
		}
	}
	return kind{}
}

// nodePrefix is the name the driver asks to create; the server appends the
// sequence number.
func nodePrefix(guid string) string { return protectedPrefix + guid + lockInfix }

// entry is one queue node under a lock's parent.
type entry struct {
	name string
	guid string
	seq  int64
	kind kind
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
	return entry{name: name, guid: guid, seq: seq, kind: kindOf(guid)}, true
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
