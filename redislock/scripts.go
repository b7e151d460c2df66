package redislock

import (
	_ "embed"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts, one file each under scripts/: every change of a lock's
// state is one script, atomic on its node. The files say what their keys
// and arguments are and what they return.
var (
	// A single node (lock.go): each starts with single.lua, which says
	// what their keys are (keys.single).

	//go:embed scripts/single.lua
	singleLua string
	//go:embed scripts/acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(singleLua + acquireLua)
	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = redis.NewScript(singleLua + releaseLua)
	//go:embed scripts/srenew.lua
	sRenewLua    string
	sRenewScript = redis.NewScript(singleLua + sRenewLua)
	//go:embed scripts/sdequeue.lua
	sDequeueLua    string
	sDequeueScript = redis.NewScript(singleLua + sDequeueLua)
	//go:embed scripts/sstatus.lua
	sStatusLua    string
	sStatusScript = redis.NewScript(singleLua + sStatusLua)

	// Redlock, on each node (redlock.go, redlock_attempt.go).

	//go:embed scripts/rllock.lua
	rlLockLua    string
	rlLockScript = redis.NewScript(rlLockLua)
	//go:embed scripts/rlfence.lua
	rlFenceLua    string
	rlFenceScript = redis.NewScript(rlFenceLua)
	//go:embed scripts/rlrelease.lua
	rlReleaseLua    string
	rlReleaseScript = redis.NewScript(rlReleaseLua)

	//go:embed scripts/renew.lua
	renewLua    string
	renewScript = redis.NewScript(renewLua)
	//go:embed scripts/dequeue.lua
	dequeueLua    string
	dequeueScript = redis.NewScript(dequeueLua)
	//go:embed scripts/status.lua
	statusLua    string
	statusScript = redis.NewScript(statusLua)
)

// ttlMillis is a TTL as the scripts take it.
func ttlMillis(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }

// goneMillis is how long a given-up attempt is refused: a request that
// reaches the server later than this can still take the lock, for one TTL.
func goneMillis(ttl time.Duration) int64 { return max(2*ttlMillis(ttl), 30_000) }
