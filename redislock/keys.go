package redislock

import (
	"strconv"
	"strings"
)

// keys are the Redis names of one lock.
type keys struct {
	lock, fence, channel, queue, alive, gone string
}

// keysOf makes all six names as slices of one string: one allocation per
// Acquire instead of six, on a path whose cost is measured in allocations.
func (d *Driver) keysOf(name string) keys {
	tag := d.prefix + "{" + escape(name) + "}"
	const fence, released, waiters, alive, gone = ":fence", ":released", ":waiters", ":alive", ":gone"
	var b strings.Builder
	b.Grow(5*len(tag) + len(fence) + len(released) + len(waiters) + len(alive) + len(gone))
	for _, suffix := range []string{fence, released, waiters, alive, gone} {
		b.WriteString(tag)
		b.WriteString(suffix)
	}
	all := b.String()
	k := keys{lock: tag}
	i := 0
	for _, f := range []struct {
		dst *string
		n   int
	}{{&k.fence, len(fence)}, {&k.channel, len(released)}, {&k.queue, len(waiters)}, {&k.alive, len(alive)}, {&k.gone, len(gone)}} {
		*f.dst = all[i : i+len(tag)+f.n]
		i += len(tag) + f.n
	}
	return k
}

// escape writes name with every byte outside [A-Za-z0-9._/-] as %XX: a
// bijection, and '{' and '}' never appear.
func escape(name string) string {
	n := 0
	for i := 0; i < len(name); i++ {
		if !plain(name[i]) {
			n++
		}
	}
	if n == 0 {
		return name
	}
	const hexd = "0123456789ABCDEF"
	b := make([]byte, 0, len(name)+2*n)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if plain(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexd[c>>4], hexd[c&15])
		}
	}
	return string(b)
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '/'
}

// owner returns an id no other acquisition, here or in any other process,
// uses.
func (d *Driver) owner() string {
	var b [64]byte
	return string(strconv.AppendUint(append(append(b[:0], d.id...), '.'), d.seq.Add(1), 36))
}
