package redislock

import (
	_ "embed"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts, one file each under scripts/: every change of a lock's
// state is one script, atomic on its node. The files say what their keys
// and arguments are and what they return.
var (
	// A single node (lock.go): each holds single.lua (withSingle), which
	// says what their keys are (keys.single).

	//go:embed scripts/single.lua
	singleLua string
	//go:embed scripts/acquire.lua
	acquireLua    string
	acquireScript = newScript(withSingle(acquireLua))
	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = newScript(withSingle(releaseLua))
	//go:embed scripts/srenew.lua
	sRenewLua    string
	sRenewScript = newScript(withSingle(sRenewLua))
	//go:embed scripts/sdequeue.lua
	sDequeueLua    string
	sDequeueScript = newScript(withSingle(sDequeueLua))
	//go:embed scripts/ssetvalue.lua
	sSetValueLua    string
	sSetValueScript = newScript(sSetValueLua)
	//go:embed scripts/sholder.lua
	sHolderLua    string
	sHolderScript = newScript(sHolderLua)
	//go:embed scripts/sstatus.lua
	sStatusLua    string
	sStatusScript = newScript(withSingle(sStatusLua))

	// Redlock, on each node (redlock.go, redlock_attempt.go).

	//go:embed scripts/rllock.lua
	rlLockLua    string
	rlLockScript = newScript(rlLockLua)
	//go:embed scripts/rlfence.lua
	rlFenceLua    string
	rlFenceScript = newScript(rlFenceLua)
	//go:embed scripts/rlreleaseone.lua
	rlReleaseOneLua string
	//go:embed scripts/rlrelease.lua
	rlReleaseLua    string
	rlReleaseScript = newScript(withRelease(rlReleaseLua))
	// Releases of many Redlock locks on one node (redlock_release.go).

	//go:embed scripts/rlreleasemany.lua
	rlReleaseManyLua    string
	rlReleaseManyScript = newScript(withRelease(rlReleaseManyLua))

	//go:embed scripts/renew.lua
	renewLua    string
	renewScript = newScript(renewLua)
	// Renewals of many locks on one node, either topology (batch.go).

	//go:embed scripts/renewmany.lua
	renewManyLua    string
	renewManyScript = newScript(renewManyLua)

	//go:embed scripts/dequeue.lua
	dequeueLua    string
	dequeueScript = newScript(dequeueLua)
	//go:embed scripts/status.lua
	statusLua    string
	statusScript = newScript(statusLua)
)

// script is a Lua script as node.run sends it: by its SHA1 (EVALSHA),
// and by its text if the server does not have it. Its redis.Script is
// for tests and the hub, which run it through go-redis.
type script struct {
	*redis.Script
	src string
	sha any // the hash, boxed once
}

func newScript(src string) *script {
	s := redis.NewScript(src)
	return &script{Script: s, src: src, sha: s.Hash()}
}

// withSingle puts single.lua into a single-node script at its
// --[[single.lua]] line.
func withSingle(script string) string { return include(script, "single.lua", singleLua) }

// withRelease puts rlreleaseone.lua into a Redlock release script at its
// --[[rlreleaseone.lua]] line.
func withRelease(script string) string { return include(script, "rlreleaseone.lua", rlReleaseOneLua) }

// include puts body into script at its --[[name]] line.
func include(script, name, body string) string {
	mark := "--[[" + name + "]]\n"
	if !strings.Contains(script, mark) {
		panic("redislock: a script without " + mark)
	}
	return strings.Replace(script, mark, body, 1)
}

// ttlMillis is a TTL as the scripts take it.
func ttlMillis(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }

// goneMillis is how long a given-up attempt is refused: a request that
// reaches the server later than this can still take the lock, for one TTL.
func goneMillis(ttl time.Duration) int64 { return max(2*ttlMillis(ttl), 30_000) }
