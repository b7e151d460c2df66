package redislock

import (
	"testing"

	"github.com/dlockio/dlock/driver"
)

// TestKeysOf pins the key layout: the names are the package's storage
// format, shared with other clients of the same lock.
func TestKeysOf(t *testing.T) {
	k := (&Driver{prefix: DefaultPrefix}).keysOf("a b{c}")
	want := keys{
		lock:     "dlock:{a%20b%7Bc%7D}",
		fence:    "dlock:{a%20b%7Bc%7D}:fence",
		channel:  "dlock:{a%20b%7Bc%7D}:released",
		queue:    "dlock:{a%20b%7Bc%7D}:waiters",
		alive:    "dlock:{a%20b%7Bc%7D}:alive",
		gone:     "dlock:{a%20b%7Bc%7D}:gone",
		shared:   "dlock:{a%20b%7Bc%7D}:shared",
		tokens:   "dlock:{a%20b%7Bc%7D}:tokens",
		value:    "dlock:{a%20b%7Bc%7D}:value",
		values:   "dlock:{a%20b%7Bc%7D}:values",
		observed: "dlock:{a%20b%7Bc%7D}:observed",
		holder:   "dlock:{a%20b%7Bc%7D}:holder",
	}
	if k != want {
		t.Errorf("keysOf = %+v, want %+v", k, want)
	}
	// Every byte but [A-Za-z0-9_-] is escaped (internal/lockname), '.' and
	// '/' too since the escaper was shared by every driver.
	if k := (&Driver{prefix: "p:"}).keysOf("jobs/nightly.v2"); k.lock != "p:{jobs%2Fnightly%2Ev2}" || k.gone != k.lock+":gone" {
		t.Errorf("keysOf(jobs/nightly.v2) = %+v", k)
	}
	// A Redlock's have the names a Redlock uses only.
	rl := &Driver{prefix: DefaultPrefix}
	rl.topo = &redlock{d: rl}
	if k := rl.keysOf("a b{c}"); k != (keys{lock: want.lock, fence: want.fence, channel: want.channel,
		queue: want.queue, alive: want.alive, gone: want.gone}) {
		t.Errorf("Redlock keysOf = %+v", k)
	}
	d := &Driver{id: "abc"}
	if o1, o2 := d.owner(driver.Exclusive, 0), d.owner(driver.Exclusive, 0); o1 != "abc.1" || o2 != "abc.2" {
		t.Errorf("owner ids %q, %q; want abc.1, abc.2", o1, o2)
	}
	// A reader's and a permit's ids say so (scripts/single.lua).
	if o1, o2 := d.owner(driver.Shared, 0), d.owner(driver.Exclusive, 12); o1 != "abc.3:s" || o2 != "abc.4:p12" {
		t.Errorf("owner ids %q, %q; want abc.3:s, abc.4:p12", o1, o2)
	}
}
