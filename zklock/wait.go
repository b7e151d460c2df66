package zklock

import (
	"context"
	"reflect"
	"sync"

	"github.com/go-zookeeper/zk"

	"github.com/dlockio/dlock/driver"
)

// awaitAhead waits for one of the nodes ahead of ours that we wait for
// (blockers: one for a writer or a reader, n for a semaphore's permit, see
// modes.go; last as blockers returned it) to change and reports whether one
// was deleted. breaks is the
// connection's count of session events when the watches were armed (see
// ownIntact). A check of our node (the next a.proof) goes out with the
// watches and is answered while we wait, off the hand-off's path, unless
// the create itself can still prove the grant (createProof).
func (a *attempt) awaitAhead(ctx context.Context, blockers []entry, last bool) (gone bool, breaks int64, err error) {
	d := a.d
	if err := a.awaitStat(ctx); err != nil {
		return false, 0, d.wrapErr(ctx, "stat "+a.node, err)
	}
	if a.own.EphemeralOwner != a.sess.id {
		return false, 0, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
	}
	breaks = d.breaks.Load()
	if a.proof == nil && a.clean {
		a.proof = createProof(a.sendAt)
	}
	if a.proof == nil || !a.proof.usable(d.reportLag()) {
		// A waiter woken often (a semaphore's, by deletions ahead that do
		// not let it in) keeps a recent check rather than sending one
		// each round.
		a.proof = d.startCheck(a.nodePath())
	}
	watches, gone, err := a.watchAll(ctx, blockers)
	if err != nil || gone {
		// A node already gone was deleted between the two reads; the
		// exists-watches stay armed harmlessly.
		return gone, breaks, err
	}
	if f := testHooks.waiting; f != nil {
		f(a.parent, last)
	}
	const (
		own = iota
		done
		sessLost
		closing
		firstBlocker
	)
	cases := make([]reflect.SelectCase, firstBlocker, firstBlocker+len(watches))
	for i, ch := range map[int]any{own: a.watch, done: ctx.Done(), sessLost: a.sess.lost, closing: d.closing} {
		cases[i] = reflect.SelectCase{Dir: reflect.SelectRecv}
		if v := reflect.ValueOf(ch); !v.IsNil() {
			cases[i].Chan = v // a nil channel's case is left out: the zero Value
		}
	}
	for _, w := range watches {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w)})
	}
	chosen, v, ok := reflect.Select(cases)
	switch chosen {
	case own:
		// Our node changed or went: re-read the queue to find out.
		if ev, _ := v.Interface().(zk.Event); !ok || ev.Type != zk.EventNodeDataChanged {
			a.watch = nil
		} else {
			a.watch = a.rewatch(ctx)
		}
		return false, breaks, nil
	case done:
		return false, 0, ctx.Err()
	case sessLost:
		return false, 0, d.wrapErr(ctx, "wait in "+a.parent, errSessionEnded)
	case closing:
		return false, 0, driver.ErrClosed
	}
	// Only a deletion lets us in: a session event or a data change of the
	// node means re-read.
	ev, _ := v.Interface().(zk.Event)
	return ok && ev.Type == zk.EventNodeDeleted, breaks, nil
}

// watchAll arms an exists-watch on each blocker, the requests sent
// together, and reports whether one of them is gone already.
func (a *attempt) watchAll(ctx context.Context, blockers []entry) ([]<-chan zk.Event, bool, error) {
	stats := make([]nodeStat, len(blockers))
	errs := make([]error, len(blockers))
	var wg sync.WaitGroup
	for i, b := range blockers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stats[i], errs[i] = a.d.exists(ctx, a.parent+"/"+b.name, true)
		}()
	}
	wg.Wait()
	watches := make([]<-chan zk.Event, 0, len(blockers))
	gone := false
	for i, b := range blockers {
		switch {
		case errs[i] != nil:
			return nil, false, a.d.wrapErr(ctx, "watch "+a.parent+"/"+b.name, errs[i])
		case !stats[i].exists:
			gone = true
		}
		watches = append(watches, stats[i].watch)
	}
	return watches, gone, nil
}
