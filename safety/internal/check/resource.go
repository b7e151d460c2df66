package check

import (
	"slices"
	"sync"
)

// Resource is the protected resource of the workload: a counter and a set
// that clients read, modify and write back under the lock.
//
// With fencing on, every request carries the lease's token and is refused if
// the token is lower than the highest the resource has seen; reads count as
// "seen" too, because a read-modify-write is only safe if a newer holder's
// read makes the older holder's later write stale. With fencing off the
// resource accepts everything but still notes which writes were stale, to
// show what fencing would have saved.
type Resource struct {
	fenced bool

	mu      sync.Mutex
	maxTok  uint64
	counter int
	set     []int
	writes  []Write
	reads   int
	refused int // reads refused

	last     map[int]snapshot // each client's last accepted read
	rechecks int              // readers' second reads accepted
	torn     []string         // readers that saw the state change under their read lock

	limit    int            // semaphore: permits; 0 when the workload is not one
	in       map[uint64]int // semaphore: holders registered, token -> client
	enters   int
	enterRef int      // enters refused: limit holders were in (fenced)
	maxIn    int      // most holders in at once
	overfull []string // enters beyond the limit (unfenced)
}

type snapshot struct {
	token   uint64
	counter int
	n       int // len(set)
}

// Write is one write request and what the resource did with it.
type Write struct {
	Client   int
	Token    uint64
	At       int64 // Now() when applied or refused
	Value    int   // the counter value written
	Elem     int   // the element this write added to the set
	Accepted bool
	Stale    bool // the token was below the highest seen (accepted only without fencing)
}

// NewResource returns an empty resource that checks tokens if fenced.
func NewResource(fenced bool) *Resource {
	return &Resource{fenced: fenced, last: map[int]snapshot{}, in: map[uint64]int{}}
}

// Read returns the counter and the set, or ok=false if the token is stale.
func (r *Resource) Read(client int, token uint64) (counter int, set []int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fenced && token < r.maxTok {
		r.refused++
		return 0, nil, false
	}
	r.maxTok = max(r.maxTok, token)
	r.reads++
	r.last[client] = snapshot{token: token, counter: r.counter, n: len(r.set)}
	return r.counter, slices.Clone(r.set), true
}

// Write replaces the counter and set with value and set, which the client
// computed from its read by adding one and elem. It reports whether the
// write was accepted.
func (r *Resource) Write(client int, token uint64, value int, set []int, elem int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := Write{Client: client, Token: token, At: Now(), Value: value, Elem: elem, Stale: token < r.maxTok}
	if !(r.fenced && w.Stale) {
		w.Accepted = true
		r.maxTok = max(r.maxTok, token)
		r.counter = value
		r.set = slices.Clone(set)
	}
	r.writes = append(r.writes, w)
	return w.Accepted
}

// State returns the final counter, set and the log of writes.
func (r *Resource) State() (counter int, set []int, writes []Write) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counter, slices.Clone(r.set), slices.Clone(r.writes)
}
