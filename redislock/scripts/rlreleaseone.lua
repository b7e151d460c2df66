-- One Redlock release on one node (rlrelease.lua, rlreleasemany.lua): the
-- lock key, its waiter queue, the waiters' deadlines, the given-up
-- attempts; the attempt's key value, the release channel, or '' to wake
-- nobody (a split vote's contenders try again by themselves), the waiter
-- id to take out of the queue (a holder that is done), or '' to keep its
-- place (a failed attempt), how long (ms) to refuse the attempt from now on
-- if it has not taken the key here.
-- Deletes the lock if it is ours; returns 1 if it was ours, 0 if not. A
-- release notes VALUE:r among the given-up attempts for as long, so that a
-- copy of it sent again after a lost reply (go-redis retries by itself)
-- answers 1, not 0: the value is one attempt's, the note its own release.
local function now()
	local t = redis.call('TIME')
	return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function release(lock, queue, alive, gone, value, channel, waiter, keep)
	if waiter ~= '' then
		-- Its queue entries go on every node, held here or not: one left
		-- behind would be woken in vain, in place of a live waiter.
		redis.call('ZREM', queue, waiter)
		redis.call('ZREM', alive, waiter)
	end
	local ok, cur = pcall(redis.call, 'GET', lock)
	if (not ok or cur ~= value) and redis.call('ZSCORE', gone, value .. ':r') then
		return 1
	end
	if not ok or cur ~= value then
		-- The attempt is over, but its request has not taken the key here:
		-- it may still be on its way (a straggler behind the release, a
		-- request whose answer was lost), and must not take it afterwards
		-- (rllock.lua).
		local t = now()
		keep = tonumber(keep)
		redis.call('ZREMRANGEBYSCORE', gone, '-inf', t)
		redis.call('ZADD', gone, t + keep, value)
		if redis.call('PTTL', gone) < keep then
			redis.call('PEXPIRE', gone, keep)
		end
		return 0
	end
	redis.call('DEL', lock)
	local t = now()
	keep = tonumber(keep)
	redis.call('ZREMRANGEBYSCORE', gone, '-inf', t)
	redis.call('ZADD', gone, t + keep, value .. ':r')
	if redis.call('PTTL', gone) < keep then
		redis.call('PEXPIRE', gone, keep)
	end
	if channel == '' or redis.call('EXISTS', queue) == 0 then
		-- Nobody queued: every waiter queues itself before it waits, so there
		-- is no one to wake.
		return 1
	end
	local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', t)
	if #dead > 0 then
		redis.call('ZREM', queue, unpack(dead))
		redis.call('ZREMRANGEBYSCORE', alive, '-inf', t)
	end
	-- Wake the first in line only, and take it out: if it is alive it tries at
	-- once and, failing, queues again with its ticket (its place); if it is
	-- dead it is never named again.
	local w = redis.call('ZRANGE', queue, 0, 0)
	if w[1] then
		redis.call('ZREM', queue, w[1])
		redis.call('ZREM', alive, w[1])
		redis.call('PUBLISH', channel, w[1])
	end
	return 1
end
