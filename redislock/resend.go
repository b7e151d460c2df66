package redislock

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// A go-redis client made with MaxRetries other than -1 (the default is 3)
// sends a command again by itself when the connection fails under it, its
// reply lost: a release whose first copy went through then meets its own
// work and would answer "not ours". The release scripts tell their own
// earlier copy apart by a note they leave (release.lua's
// PREFIX{NAME}:released:OWNER key, rlreleaseone.lua's entry in the gone
// set); the single-node script leaves it only for clients that may
// resend, so that a client made from a URL (which never resends) pays
// nothing.

// resends says whether rdb may send a command again by itself after its
// reply was lost. A client of a type it does not know is taken to.
func resends(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().MaxRetries > 0
	case *redis.ClusterClient:
		return c.Options().MaxRetries > 0
	}
	return true
}

// releaseOwn is release(ctx, 0) for the lock's own Release, which a
// resending client may deliver twice: its release then leaves the note
// (keys.releasedNote) that a second copy finds.
func (l *singleLock) releaseOwn(ctx context.Context) (int64, error) {
	if !resends(l.n.rdb) {
		return l.release(ctx, 0)
	}
	return l.n.runInt(ctx, releaseScript, l.keys.singleNoted(l.owner), l.owner, l.keys.channel, ttlMillis(l.ttl), 0, 1)
}
