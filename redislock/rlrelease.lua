-- Redlock release on one node. KEYS[1] lock key, KEYS[2] waiter queue,
-- KEYS[3] waiter deadlines, KEYS[4] given-up attempts. ARGV[1] the
-- attempt's key value, ARGV[2] the release channel, or '' to wake nobody (a
-- split vote's contenders try again by themselves), ARGV[3] the waiter id to
-- take out of the queue (a holder that is done), or '' to keep its place (a
-- failed attempt), ARGV[4] how long (ms) to refuse the attempt from now on.
-- Deletes the lock if it is ours; returns 1 if it was ours, 0 if not.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
-- Whatever happened to the key here, the attempt is over: a copy of its
-- request, or the request itself if it is still on its way (a straggler
-- behind the release), must not take the key afterwards (lock.lua).
local keep = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
redis.call('ZADD', KEYS[4], now + keep, ARGV[1])
if redis.call('PTTL', KEYS[4]) < keep then
	redis.call('PEXPIRE', KEYS[4], keep)
end
if ARGV[3] ~= '' then
	-- Its queue entries go on every node, held here or not: one left
	-- behind would be woken in vain, in place of a live waiter.
	redis.call('ZREM', KEYS[2], ARGV[3])
	redis.call('ZREM', KEYS[3], ARGV[3])
end
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or cur ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '' or redis.call('EXISTS', KEYS[2]) == 0 then
	-- Nobody queued: every waiter queues itself before it waits, so there
	-- is no one to wake.
	return 1
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #dead > 0 then
	redis.call('ZREM', KEYS[2], unpack(dead))
	redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
end
-- Wake the first in line only, and take it out: if it is alive it tries at
-- once and, failing, queues again with its ticket (its place); if it is
-- dead it is never named again.
local w = redis.call('ZRANGE', KEYS[2], 0, 0)
if w[1] then
	redis.call('ZREM', KEYS[2], w[1])
	redis.call('ZREM', KEYS[3], w[1])
	redis.call('PUBLISH', ARGV[2], w[1])
end
return 1
