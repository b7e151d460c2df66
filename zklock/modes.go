package zklock

import (
	"fmt"
	"strconv"

	"github.com/dlockio/dlock/driver"
)

// What a queue node waits for, by what it asks (Curator's recipes on one
// queue per name; the marker in each node's guid says its kind, names.go):
//
//   - a writer (a mutex, Mode Exclusive) holds at the head of the queue,
//     watches the node just before it, of any kind, when that is the head,
//     and otherwise the node two before it (see blockers): a release wakes
//     the next in line, which takes the lock with no read, and the one
//     after it, which reads the queue while the new holder holds;
//   - a reader (Mode Shared) holds when no writer is ahead of it and
//     otherwise watches the last writer ahead of it, never a reader: so a
//     reader that comes after a waiting writer queues behind it (no writer
//     starvation), and readers share with readers;
//   - a permit of a semaphore of n holds among the first n nodes and
//     otherwise watches the n nodes just before it: while those n are there
//     at least n are ahead, and no node can ever join ahead of it, so only
//     the deletion of one of them can let it in.
//
// Each counts only the nodes ahead of its own, with lower sequence numbers:
// kazoo's read-write lock counted later ones too and deadlocked
// (python-zk/kazoo#649).

// kind is what a queue node asks for: the lock exclusively (limit 0,
// shared false), shared, or one of limit permits of a semaphore.
type kind struct {
	shared bool
	limit  int
}

func (k kind) String() string {
	switch {
	case k.limit > 0:
		return "a semaphore of " + strconv.Itoa(k.limit) + " permits"
	case k.shared:
		return "a lock (reader)"
	}
	return "a lock (writer)"
}

// requestKind returns what req asks for, or why it cannot be asked.
func requestKind(req driver.Request) (kind, error) {
	switch {
	case req.Value != "" && (req.Limit != 0 || req.Mode != driver.Exclusive):
		return kind{}, driver.InvalidArgument("zklock: Value", fmt.Sprintf("%d bytes", len(req.Value)),
			"empty but for an exclusive lock (an election's leader): readers and permits keep no value")
	case len(req.Value) > maxValue:
		return kind{}, driver.InvalidArgument("zklock: Value", fmt.Sprintf("%d bytes", len(req.Value)), valueBound)
	case req.Limit < 0 || req.Limit > maxLimit:
		return kind{}, driver.InvalidArgument("zklock: Limit", req.Limit, fmt.Sprintf("0 (a lock) or a number of permits from 1 to %d", maxLimit))
	case req.Limit > 0 && req.Mode != driver.Exclusive:
		return kind{}, driver.InvalidArgument("zklock: Mode", req.Mode, "exclusive with a Limit (one permit of a semaphore)")
	case req.Mode == driver.Shared:
		return kind{shared: true}, nil
	case req.Mode == driver.Exclusive:
		return kind{limit: req.Limit}, nil
	}
	return kind{}, fmt.Errorf("zklock: Mode %v: %w", req.Mode, driver.ErrNotSupported)
}

// blockers returns the nodes ahead of q[idx] (ours, of kind k) whose
// deletion it waits for; none means it holds. last says that the deletion
// of any one of them is enough for it to hold.
func (k kind) blockers(q []entry, idx int) (b []entry, last bool) {
	ahead := q[:idx]
	switch {
	case k.limit > 0:
		if idx < k.limit {
			return nil, false
		}
		return ahead[idx-k.limit:], idx == k.limit
	case k.shared:
		w, writers := -1, 0
		for i, e := range ahead {
			if !e.kind.shared {
				w, writers = i, writers+1
			}
		}
		if w < 0 {
			return nil, false
		}
		return ahead[w : w+1], writers == 1
	}
	if idx == 0 {
		return nil, false
	}
	if idx >= 2 {
		// Two or more ahead: wait for the node two ahead, not the one
		// just ahead. We cannot hold while either is there, so the
		// deletion of either is as good a time to read the queue again.
		// In a queue of writers the node two ahead goes first (it holds
		// first), and the one just ahead is then the holder: the read
		// that follows, while that holder works, finds us next in line,
		// and its release grants us with no read (acquire.go), off the
		// handoff's path. A node just ahead that gives up first goes
		// unnoticed until the node two ahead goes: we could not hold
		// before that anyway.
		return ahead[idx-2 : idx-1], false
	}
	return ahead[idx-1:], true
}

// wouldHold reports whether a node of kind k that joined the queue q now
// would hold at once.
func (k kind) wouldHold(q []entry) bool {
	b, _ := k.blockers(append(q[:len(q):len(q)], entry{kind: k}), len(q))
	return len(b) == 0
}

// conflict returns an error if a node of q asks for the name under another
// limit than k (a lock's is 0): never a mix of a lock and a semaphore, or
// of two semaphores of different sizes. Readers and writers mix.
func (k kind) conflict(q []entry) error {
	for _, e := range q {
		if e.kind.limit != k.limit {
			return driver.InvalidArgument("zklock: Limit", k.limit,
				fmt.Sprintf("%d: the name is held or awaited as %v", e.kind.limit, e.kind))
		}
	}
	return nil
}
