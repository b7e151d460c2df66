package redislock

import (
	"strconv"
	"strings"

	"github.com/dlockio/dlock/internal/lockname"
)

// keys are the Redis names of one lock (the layout is in the package doc).
type keys struct {
	lock, fence, channel, queue, alive, gone string
}

// keysOf returns the names of the lock name: its hash tag is name escaped
// by lockname (no limit: Redis keys may be megabytes long), which never
// holds '{' or '}'.
func (d *Driver) keysOf(name string) keys {
	return keysOfTag(d.prefix + "{" + lockname.Escape(name, 0) + "}")
}

const (
	fenceSuffix, releasedSuffix, waitersSuffix = ":fence", ":released", ":waiters"
	aliveSuffix, goneSuffix                    = ":alive", ":gone"
)

// keysOfTag makes the names of the lock whose key is tag (PREFIX{NAME}),
// all six as slices of one string: one allocation per Acquire instead of
// six, on a path whose cost is measured in allocations.
func keysOfTag(tag string) keys {
	var b strings.Builder
	b.Grow(5*len(tag) + len(fenceSuffix) + len(releasedSuffix) + len(waitersSuffix) + len(aliveSuffix) + len(goneSuffix))
	for _, suffix := range []string{fenceSuffix, releasedSuffix, waitersSuffix, aliveSuffix, goneSuffix} {
		b.WriteString(tag)
		b.WriteString(suffix)
	}
	all := b.String()
	k := keys{lock: tag}
	i := 0
	for _, f := range []struct {
		dst *string
		n   int
	}{{&k.fence, len(fenceSuffix)}, {&k.channel, len(releasedSuffix)}, {&k.queue, len(waitersSuffix)},
		{&k.alive, len(aliveSuffix)}, {&k.gone, len(goneSuffix)}} {
		*f.dst = all[i : i+len(tag)+f.n]
		i += len(tag) + f.n
	}
	return k
}

// owner returns an id no other acquisition, here or in any other process,
// uses.
func (d *Driver) owner() string {
	var b [64]byte
	return string(strconv.AppendUint(append(append(b[:0], d.id...), '.'), d.seq.Add(1), 36))
}
