package redislock

import (
	"strconv"
	"strings"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/lockname"
)

// keys are the Redis names of one lock (the layout is in the package doc).
type keys struct {
	lock, fence, channel, queue, alive, gone string
	// shared, tokens: a single node's readers or permits and their tokens.
	shared, tokens string
	// value, values, observed, holder: a single node's election (the
	// exclusive holder's value, the queued waiters' values, the marker of
	// observers, and the channel on which changes of the holder are
	// published while it exists: scripts/single.lua).
	value, values, observed, holder string
}

// keysOf returns the names of the lock name: its hash tag is name escaped
// by lockname (no limit: Redis keys may be megabytes long), which never
// holds '{' or '}'. A Redlock's have only the names a Redlock uses (lock,
// fence, channel, queue, alive, gone; the others are ""): they are kept
// as long as the lock is held, and the single node's names would double
// their heap.
func (d *Driver) keysOf(name string) keys {
	n := len(suffixes)
	if _, ok := d.topo.(*redlock); ok {
		n = redlockSuffixes
	}
	return keysFrom([4]string{d.prefix, "{", lockname.Escape(name, 0), "}"}, n)
}

const (
	fenceSuffix, releasedSuffix, waitersSuffix = ":fence", ":released", ":waiters"
	aliveSuffix, goneSuffix                    = ":alive", ":gone"
	sharedSuffix, tokensSuffix                 = ":shared", ":tokens"
	valueSuffix, valuesSuffix                  = ":value", ":values"
	observedSuffix, holderSuffix               = ":observed", ":holder"
)

// suffixes are the names keysOfTag adds to the tag, in the order of
// keys's fields after lock; a Redlock's are the first redlockSuffixes.
var suffixes = [...]string{fenceSuffix, releasedSuffix, waitersSuffix, aliveSuffix, goneSuffix, sharedSuffix, tokensSuffix,
	valueSuffix, valuesSuffix, observedSuffix, holderSuffix}

const redlockSuffixes = 5

// keysOfTag makes the names of the lock whose key is tag (PREFIX{NAME}),
// all of them as slices of one string: one allocation per Acquire instead
// of one per name, on a path whose cost is measured in allocations.
func keysOfTag(tag string) keys { return keysFrom([4]string{tag}, len(suffixes)) }

// keysFrom makes the lock key (the concatenation of tag's parts, made here
// rather than by the caller: one allocation less) and the first n
// suffixes' names (the others ""), all in one string.
func keysFrom(tag [4]string, n int) keys {
	tagLen := 0
	for _, p := range tag {
		tagLen += len(p)
	}
	size := tagLen
	for _, s := range suffixes[:n] {
		size += tagLen + len(s)
	}
	var b strings.Builder
	b.Grow(size)
	writeTag := func() {
		for _, p := range tag {
			b.WriteString(p)
		}
	}
	writeTag()
	for _, s := range suffixes[:n] {
		writeTag()
		b.WriteString(s)
	}
	all := b.String()
	k := keys{lock: all[:tagLen]}
	i := tagLen
	dsts := [...]*string{&k.fence, &k.channel, &k.queue, &k.alive, &k.gone, &k.shared, &k.tokens,
		&k.value, &k.values, &k.observed, &k.holder}
	for j, dst := range dsts[:n] {
		*dst = all[i : i+tagLen+len(suffixes[j])]
		i += tagLen + len(suffixes[j])
	}
	return k
}

// single returns the keys the single-node scripts take, in their order
// (scripts/single.lua).
func (k keys) single() []string {
	return []string{k.lock, k.fence, k.queue, k.alive, k.gone, k.shared, k.tokens, k.value, k.values, k.observed}
}

// singleNoted is single with owner's release note after them, for a
// release that leaves one (scripts/release.lua, resend.go).
func (k keys) singleNoted(owner string) []string {
	return []string{k.lock, k.fence, k.queue, k.alive, k.gone, k.shared, k.tokens, k.value, k.values, k.observed,
		k.releasedNote(owner)}
}

// releasedNote is the key by which a release of owner's hold tells a copy
// of itself sent again (by go-redis, after the reply was lost) that it
// released: PREFIX{NAME}:released:OWNER, kept for the TTL.
func (k keys) releasedNote(owner string) string { return k.lock + releasedSuffix + ":" + owner }

// owner returns an id no other acquisition, here or in any other process,
// uses, for a request of mode and limit. The id says what it holds or
// waits for, so that the scripts read it from the queue and the holders:
// ":s" ends a reader's, ":pN" the holder's of one of N permits; a mutex's
// (a writer's) has no suffix, as before read-write locks existed, and
// carries "~B" on a single node whose client barges (Options.Fairness: B
// is its StarvationBound in microseconds).
func (d *Driver) owner(mode driver.Mode, limit int) string {
	var b [64]byte
	o := strconv.AppendUint(append(append(b[:0], d.id...), '.'), d.seq.Add(1), 36)
	if d.barge > 0 && mode == driver.Exclusive && limit == 0 {
		// A barging writer (Options.Fairness): its bound in microseconds.
		o = strconv.AppendInt(append(o, '~'), d.barge, 10)
	}
	switch {
	case limit > 0:
		o = strconv.AppendInt(append(o, ":p"...), int64(limit), 10)
	case mode == driver.Shared:
		o = append(o, ":s"...)
	}
	return string(o)
}
