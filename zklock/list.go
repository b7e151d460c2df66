package zklock

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/lockname"
)

var (
	_ driver.Lister = (*Driver)(nil)
	_ driver.Lister = (*perTTL)(nil)
)

// listReads bounds the status reads a List has in flight at once.
const listReads = 16

// List lists the queues under the prefix node (one container per name,
// named by lockname.Escape: lockname.Unescape gives the name back) whose
// names start with prefix, with their Status; a queue that is empty (a
// container the server has not removed yet) is left out. A name too long
// to be kept (a "~" and its hash) is listed under that engine name when
// prefix is empty.
func (d *Driver) List(ctx context.Context, prefix string) ([]driver.Listed, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	kids, err := d.children(ctx, d.root)
	if errors.Is(err, zk.ErrNoNode) {
		return nil, nil
	}
	if err != nil {
		return nil, d.wrapErr(ctx, "list "+d.root, err)
	}
	type found struct {
		node string
		l    driver.Listed
		err  error
	}
	var fs []*found
	for _, k := range kids {
		name, ok := lockname.Unescape(k)
		switch {
		case ok && strings.HasPrefix(name, prefix):
		case !ok && prefix == "" && strings.HasPrefix(k, "~"):
			name = k
		default:
			continue
		}
		fs = append(fs, &found{node: k, l: driver.Listed{Name: name}})
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, listReads)
	for _, f := range fs {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			f.l.Status, f.err = d.statusAt(ctx, d.root+"/"+f.node)
		}()
	}
	wg.Wait()
	var ls []driver.Listed
	for _, f := range fs {
		if f.err != nil {
			return nil, f.err
		}
		if f.l.Status.Held {
			ls = append(ls, f.l)
		}
	}
	slices.SortFunc(ls, func(a, b driver.Listed) int { return strings.Compare(a.Name, b.Name) })
	return ls, nil
}

// List lists on the newest session (see Status).
func (p *perTTL) List(ctx context.Context, prefix string) ([]driver.Listed, error) {
	d, err := p.observing()
	if err != nil {
		return nil, err
	}
	return d.List(ctx, prefix)
}
