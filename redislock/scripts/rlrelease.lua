-- Redlock release on one node. KEYS[1] lock key, KEYS[2] waiter queue,
-- KEYS[3] waiter deadlines, KEYS[4] given-up attempts. ARGV[1] the
-- attempt's key value, ARGV[2] the release channel, or '' to wake nobody (a
-- split vote's contenders try again by themselves), ARGV[3] the waiter id to
-- take out of the queue (a holder that is done), or '' to keep its place (a
-- failed attempt), ARGV[4] how long (ms) to refuse the attempt from now on
-- if it has not taken the key here.
-- Deletes the lock if it is ours; returns 1 if it was ours, 0 if not.
local function now()
	local t = redis.call('TIME')
	return t[1] * 1000 + math.floor(t[2] / 1000)
end
if ARGV[3] ~= '' then
	-- Its queue entries go on every node, held here or not: one left
	-- behind would be woken in vain, in place of a live waiter.
	redis.call('ZREM', KEYS[2], ARGV[3])
	redis.call('ZREM', KEYS[3], ARGV[3])
end
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or cur ~= ARGV[1] then
	-- The attempt is over, but its request has not taken the key here:
	-- it may still be on its way (a straggler behind the release, a
	-- request whose answer was lost), and must not take it afterwards
	-- (rllock.lua).
	local keep, t = tonumber(ARGV[4]), now()
	redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', t)
	redis.call('ZADD', KEYS[4], t + keep, ARGV[1])
	if redis.call('PTTL', KEYS[4]) < keep then
		redis.call('PEXPIRE', KEYS[4], keep)
	end
	return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '' or redis.call('EXISTS', KEYS[2]) == 0 then
	-- Nobody queued: every waiter queues itself before it waits, so there
	-- is no one to wake.
	return 1
end
local t = now()
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', t)
if #dead > 0 then
	redis.call('ZREM', KEYS[2], unpack(dead))
	redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', t)
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
