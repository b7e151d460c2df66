package redislock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis evicts keys when it reaches maxmemory, as its maxmemory-policy says.
// Under allkeys-* any key can go, the fence counter included: tokens would
// start again at 1, and a lock key could vanish under its holder. Under
// volatile-* only keys with a TTL can go: the lock key (a second holder
// while the first still holds) but not the fence counter, so tokens keep
// increasing. A node is checked once, at Open or before its first lock:
// allkeys-* is refused, volatile-* noted in Capabilities. Where the server
// does not let a client read its configuration (managed Redis often
// renames or forbids CONFIG), that is noted instead.

// evictionCheck is the outcome of one node's check.
type evictionCheck struct {
	mu   sync.Mutex
	done bool
	err  error  // the node's policy breaks locks
	note string // a policy that weakens them, or one that could not be read
	last time.Time
}

// Checking a node costs its first lock one round trip. One that does not
// answer (a Redlock node that is down) is tried again at most every
// evictionRetry, each time for at most evictionTimeout, so that it does not
// slow every lock down.
const (
	evictionTimeout = time.Second
	evictionRetry   = 10 * time.Second
)

// checkEviction checks n's eviction policy once. A failure that may pass
// (the node unreachable) leaves it to be checked again later.
func (n *node) checkEviction(ctx context.Context) error {
	c := &n.eviction
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || time.Since(c.last) < evictionRetry {
		return c.err
	}
	c.last = time.Now()
	cctx, cancel := context.WithTimeout(ctx, evictionTimeout)
	policy, err := maxmemoryPolicy(cctx, n)
	cancel()
	if err != nil {
		if transient(err) || errors.Is(err, context.Canceled) {
			return nil // checked when the node answers
		}
		c.done = true
		c.note = fmt.Sprintf("%s: maxmemory-policy not readable (%s): make sure it is noeviction, "+
			"or that maxmemory is never reached", n.name, firstLine(err))
		return nil
	}
	c.done = true
	switch {
	case strings.HasPrefix(policy, "allkeys-"):
		c.err = fmt.Errorf("redislock: %s: maxmemory-policy is %s: Redis may evict any key when memory is full, "+
			"the fence counter included (tokens would start again) and lock keys under their holders; "+
			"set maxmemory-policy noeviction (or use a Redis of its own for locks)", n.name, policy)
	case strings.HasPrefix(policy, "volatile-"):
		c.note = fmt.Sprintf("%s: maxmemory-policy %s: when memory is full Redis may evict a lock key before its TTL "+
			"runs out (a second holder while the first holds); fence counters have no TTL and are kept, so tokens "+
			"still increase; noeviction avoids this", n.name, policy)
	}
	return c.err
}

// maxmemoryPolicy reads the node's maxmemory-policy.
func maxmemoryPolicy(ctx context.Context, n *node) (string, error) {
	m, err := await(ctx, n, func() *redis.MapStringStringCmd { return n.rdb.ConfigGet(ctx, "maxmemory-policy") },
		func(ctx context.Context, _ ...any) *redis.MapStringStringCmd { return redis.NewMapStringStringCmd(ctx) }).Result()
	if err != nil {
		return "", err
	}
	p, ok := m["maxmemory-policy"]
	if !ok {
		return "", errors.New("CONFIG GET maxmemory-policy returned nothing")
	}
	return p, nil
}

// checkNodes checks every node's eviction policy that has not been checked
// yet: a policy that breaks locks fails the Acquire.
func (d *Driver) checkNodes(ctx context.Context) error {
	if d.checked.Load() {
		return nil
	}
	errs := make([]error, len(d.nodes))
	fanOut(len(d.nodes), func(i int) { errs[i] = d.nodes[i].checkEviction(ctx) })
	if err := errors.Join(errs...); err != nil {
		return err
	}
	all := true
	for _, n := range d.nodes {
		n.eviction.mu.Lock()
		all = all && n.eviction.done
		n.eviction.mu.Unlock()
	}
	d.checked.Store(all)
	return nil
}

// evictionNotes returns what the checks noted.
func (d *Driver) evictionNotes() []string {
	var notes []string
	for _, n := range d.nodes {
		n.eviction.mu.Lock()
		if n.eviction.note != "" {
			notes = append(notes, n.eviction.note)
		}
		n.eviction.mu.Unlock()
	}
	return notes
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
