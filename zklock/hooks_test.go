package zklock

import "sync/atomic"

// roundGate, if set, is called before each round is counted and sent, on
// the round's own goroutine: a test may hold a round there.
var roundGate atomic.Pointer[func(renewal bool, nodes int)]

// waitingGate, if set, hears of each waiter that armed its watches and
// waits (testHooks.waiting).
var waitingGate atomic.Pointer[func(parent string, last bool)]

// Counts of the events testHooks hears of, across every driver of the test
// binary.
var recovered, pipelineMisses, readlessGrants, aloneGrants, renewRounds, renewMultis, releaseRounds atomic.Int64

func init() {
	testHooks.recovered = func() { recovered.Add(1) }
	testHooks.pipelineMiss = func() { pipelineMisses.Add(1) }
	testHooks.readlessGrant = func() { readlessGrants.Add(1) }
	testHooks.aloneGrant = func() { aloneGrants.Add(1) }
	testHooks.waiting = func(parent string, last bool) {
		if g := waitingGate.Load(); g != nil {
			(*g)(parent, last)
		}
	}
	testHooks.round = func(renewal bool, nodes int) {
		if g := roundGate.Load(); g != nil {
			(*g)(renewal, nodes)
		}
		if renewal {
			renewRounds.Add(1)
			renewMultis.Add(int64((nodes + maxBatchOps - 1) / maxBatchOps))
		} else {
			releaseRounds.Add(1)
		}
	}
}
