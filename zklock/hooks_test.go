package zklock

import "sync/atomic"

// Counts of the events testHooks hears of, across every driver of the test
// binary.
var recovered, pipelineMisses, readlessGrants, renewRounds, renewMultis, releaseRounds atomic.Int64

func init() {
	testHooks.recovered = func() { recovered.Add(1) }
	testHooks.pipelineMiss = func() { pipelineMisses.Add(1) }
	testHooks.readlessGrant = func() { readlessGrants.Add(1) }
	testHooks.round = func(renewal bool, nodes int) {
		if renewal {
			renewRounds.Add(1)
			renewMultis.Add(int64((nodes + maxBatchOps - 1) / maxBatchOps))
		} else {
			releaseRounds.Add(1)
		}
	}
}
