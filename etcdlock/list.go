package etcdlock

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/lockname"
)

var _ driver.Lister = (*Driver)(nil)

// List reports the names held or awaited under prefix: one read of the
// key range the escaped prefix starts (an escaped prefix is a prefix of
// the escaped names that start with it), grouped by name, each with the
// status Status gives. A name without keys is neither held nor awaited,
// and has no keys to list.
func (d *Driver) List(ctx context.Context, prefix string) ([]driver.Listed, error) {
	if d.cli.Ctx().Err() != nil {
		return nil, fmt.Errorf("etcdlock: list %q: %w", prefix, errClientClosed)
	}
	from := d.root + lockname.Escape(prefix, 0)
	resp, err := d.cli.Get(ctx, from, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("etcdlock: list %q: %w", prefix, d.engineErr(ctx, err))
	}
	byName := map[string][]*mvccpb.KeyValue{}
	var names []string
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), d.root)
		esc, _, ok := strings.Cut(rest, "/")
		if !ok {
			continue // not a key of this driver's layout
		}
		if _, seen := byName[esc]; !seen {
			names = append(names, esc)
		}
		byName[esc] = append(byName[esc], kv) // still in create-revision order
	}
	var out []driver.Listed
	for _, esc := range names {
		name, ok := lockname.Unescape(esc)
		if !ok {
			continue // not a name this driver made
		}
		out = append(out, driver.Listed{Name: name, Status: d.statusOf(ctx, d.root+esc+"/", byName[esc])})
	}
	slices.SortFunc(out, func(a, b driver.Listed) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
