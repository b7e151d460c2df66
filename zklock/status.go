package zklock

import (
	"context"
	"errors"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// Status reports the holders (a writer, the readers ahead of the first
// writer, or a semaphore's first Limit nodes), the newest holder's token,
// and the number of waiters.
func (d *Driver) Status(ctx context.Context, name string) (driver.Status, error) {
	return d.statusAt(ctx, d.parent(name))
}

// statusAt is the Status of the queue under parent.
func (d *Driver) statusAt(ctx context.Context, parent string) (driver.Status, error) {
	kids, err := d.children(ctx, parent)
	if errors.Is(err, zk.ErrNoNode) {
		return driver.Status{}, nil
	}
	if err != nil {
		return driver.Status{}, d.wrapErr(ctx, "list "+parent, err)
	}
	q := queue(kids)
	if len(q) == 0 {
		return driver.Status{}, nil
	}
	holders := 0
	for i, e := range q {
		if b, _ := e.kind.blockers(q, i); len(b) > 0 {
			break
		}
		holders++
	}
	st := driver.Status{Held: true, Holders: holders, Waiters: len(q) - holders, Limit: q[0].kind.limit}
	if q[0].kind.shared {
		st.Mode = driver.Shared
	}
	newest := parent + "/" + q[holders-1].name
	holder, err := d.exists(ctx, newest, false)
	if err != nil {
		return driver.Status{}, d.wrapErr(ctx, "stat "+newest, err)
	}
	if holder.exists {
		st.Token = uint64(holder.stat.Czxid)
	}
	return st, nil
}
