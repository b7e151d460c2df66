-- Redlock release on one node. KEYS[1] lock key, KEYS[2] waiter queue,
-- KEYS[3] waiter deadlines. ARGV[1] owner id, ARGV[2] release channel, or ''
-- to give back a key taken in a failed attempt without waking anyone (the
-- contenders of a split vote try again by themselves; a waiter keeps its
-- place in the queue).
-- Deletes the lock if it is ours; returns 1 if it was ours, 0 if not.
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
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
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
