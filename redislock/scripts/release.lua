-- Single-node release. KEYS[1] lock key, KEYS[2] waiter queue, KEYS[3] fence
-- counter, KEYS[4] given-up owners. ARGV[1] owner id, ARGV[2] release
-- channel, ARGV[3] TTL in milliseconds, ARGV[4] how long (ms) to refuse
-- this owner's attempts from now on if the lock is not theirs, '0' for not
-- at all.
-- Deletes the lock if it is ours; returns 1 if it was ours, 0 if not
-- (nothing changed).
-- If a waiter is queued, the lock goes straight to it: the script takes the
-- next token, sets the key to the waiter's owner id and publishes
-- "OWNER TOKEN TTL", so the waiter holds the lock when the message arrives,
-- with no further round trip. A waiter that has given up releases such a
-- grant when the message reaches its client; one whose process died leaves
-- it to expire after TTL.
local function now()
	local t = redis.call('TIME')
	return t[1] * 1000 + math.floor(t[2] / 1000)
end
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if not ok or cur ~= ARGV[1] then
	if ARGV[4] ~= '0' then
		-- The caller gives up an attempt whose outcome it does not know:
		-- it has not taken the lock, but may still be on its way, and
		-- must not take it afterwards (acquire.lua).
		local keep, t = tonumber(ARGV[4]), now()
		redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', t)
		redis.call('ZADD', KEYS[4], t + keep, ARGV[1])
		if redis.call('PTTL', KEYS[4]) < keep then
			redis.call('PEXPIRE', KEYS[4], keep)
		end
	end
	return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
	redis.call('DEL', KEYS[1])
	return 1
end
-- Entries of waiters that stopped trying are dead (acquire.lua).
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now())
local w = redis.call('ZRANGE', KEYS[2], 0, 0)
if not w[1] then
	redis.call('DEL', KEYS[1])
	return 1
end
redis.call('ZREM', KEYS[2], w[1])
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], w[1], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[2], w[1] .. ' ' .. token .. ' ' .. ARGV[3])
return 1
