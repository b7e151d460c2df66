package zklock

import "sync/atomic"

// Counts of the events testHooks hears of, across every driver of the test
// binary.
var recovered, pipelineMisses, readlessGrants, renewRounds atomic.Int64

func init() {
	testHooks.recovered = func() { recovered.Add(1) }
	testHooks.pipelineMiss = func() { pipelineMisses.Add(1) }
	testHooks.readlessGrant = func() { readlessGrants.Add(1) }
	testHooks.renewRound = func(int) { renewRounds.Add(1) }
}
