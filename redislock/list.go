package redislock

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/dlockio/dlock/driver"
	"github.com/dlockio/dlock/internal/lockname"
)

var _ driver.Lister = (*Driver)(nil)

// scanCount is the COUNT hint of each SCAN: how many keys the server looks
// at per call, not how many match.
const scanCount = 1000

// List implements driver.Lister. It walks the keys under the prefix with
// SCAN and MATCH (never KEYS, which blocks the server), then reads each name
// found with Status, and lists the names Status finds held or awaited: a
// name whose keys are only leftovers (a fence counter kept for the next
// token) is not listed. With Redlock the keys are walked on every node and
// a majority must answer, so a lock held on a majority is found on one of
// them at least; its Status is the one Status(name) gives (held while a
// majority keeps it). The walk is not a snapshot: a lock taken or released
// during it may or may not be listed, and each Status is read after the
// walk.
func (d *Driver) List(ctx context.Context, prefix string) ([]driver.Listed, error) {
	if d.closed.Load() {
		return nil, driver.ErrClosed
	}
	match := globEscape(d.prefix) + "{" + lockname.Escape(prefix, 0) + "*"
	found := make([]map[string]bool, len(d.nodes))
	errs := make([]error, len(d.nodes))
	fanOut(len(d.nodes), func(i int) { found[i], errs[i] = d.nodes[i].scanTags(ctx, match, d.prefix+"{") })
	tags := map[string]bool{}
	var failed []error
	for i := range d.nodes {
		if errs[i] != nil {
			failed = append(failed, errs[i])
			continue
		}
		for t := range found[i] {
			tags[t] = true
		}
	}
	if need := majority(len(d.nodes)); len(d.nodes)-len(failed) < need {
		if len(d.nodes) == 1 {
			return nil, failed[0]
		}
		return nil, quorumError(fmt.Sprintf("list read from %d of %d nodes", len(d.nodes)-len(failed), len(d.nodes)), failed)
	}
	var out []driver.Listed
	for t := range tags {
		name, ok := lockname.Unescape(t)
		switch {
		case ok && strings.HasPrefix(name, prefix):
		case strings.HasPrefix(t, "~") && prefix == "":
			name = t // hashed: only its engine name is known
		default:
			continue // not a key this driver makes, or outside the prefix
		}
		st, err := d.topo.status(ctx, keysOfTag(d.prefix+"{"+t+"}"))
		if err != nil {
			return nil, err
		}
		if st.Held || st.Waiters > 0 {
			out = append(out, driver.Listed{Name: name, Status: st})
		}
	}
	slices.SortFunc(out, func(a, b driver.Listed) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// scanTags walks the keys matching match on n (on every master of a
// Cluster) and returns the hash tags (the escaped names) of those that
// start with start (the driver's prefix and "{"): MATCH is the server's
// filter, this is the exact one.
func (n *node) scanTags(ctx context.Context, match, start string) (map[string]bool, error) {
	tags := map[string]bool{}
	var mu sync.Mutex // ForEachMaster scans the masters at once
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		var cursor uint64
		for {
			cmd := await(ctx, n, func() *redis.ScanCmd { return c.Scan(ctx, cursor, match, scanCount) },
				func(ctx context.Context, _ ...any) *redis.ScanCmd { return redis.NewScanCmd(ctx, nil) })
			ks, next, err := cmd.Result()
			if err != nil {
				return n.errorf(match, err)
			}
			for _, k := range ks {
				tag, ok := strings.CutPrefix(k, start)
				if !ok {
					continue
				}
				if end := strings.IndexByte(tag, '}'); end >= 0 {
					mu.Lock()
					tags[tag[:end]] = true
					mu.Unlock()
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := n.rdb.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return scan(ctx, m) })
		return tags, err
	}
	return tags, scan(ctx, n.rdb)
}

// globEscape quotes the bytes MATCH reads as a pattern (* ? [ ] \) with a
// backslash, so that a prefix holding them matches only itself.
func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
