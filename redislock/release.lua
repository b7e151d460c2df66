-- KEYS[1] lock key, KEYS[2] waiter queue (single node; absent for Redlock).
-- ARGV[1] owner id, ARGV[2] release channel, ARGV[3] TTL in milliseconds.
-- Deletes the lock if it is ours and wakes a waiter; returns 1 if it was
-- ours, 0 if not (nothing changed).
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or cur ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1])
local next = ''
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
	-- Wake only the waiter queued longest (the soonest to drop out: every
	-- retry pushes a waiter back), rather than every waiter at once; push
	-- it back too, so that a waiter that died is chosen once at most.
	local t = redis.call('TIME')
	local now = t[1] * 1000 + math.floor(t[2] / 1000)
	redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
	local w = redis.call('ZRANGE', KEYS[2], 0, 0)
	if w[1] then
		next = w[1]
		redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[3]), next)
	end
end
redis.call('PUBLISH', ARGV[2], next)
return 1
