-- Single-node acquire. KEYS[1] lock key, KEYS[2] fence counter, KEYS[3]
-- waiter queue (owner -> server time in ms after which the entry is dead),
-- KEYS[4] given-up owners (owner -> server time in ms until which it is
-- remembered). ARGV[1] owner id, ARGV[2] TTL in milliseconds, ARGV[3] "1" if
-- the caller waits (is subscribed) and should be queued on failure.
-- Returns {1, token} when granted, {0, pttl, fence} when held by someone
-- else: fence is the counter now, so any grant made before this call (and
-- announced by a message that may still be on its way) has a token no
-- larger, and any grant after it a larger one.
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then
	-- A copy of an attempt that arrives after its owner gave it up
	-- (release.lua): taking the lock now would leave it to nobody.
	return redis.error_reply('DLOCK attempt arrived after its owner gave up')
end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
	-- A release handed the lock to us (its message may still be on its
	-- way), or our own earlier attempt whose reply was lost.
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return {1, tonumber(redis.call('GET', KEYS[2]))}
end
if cur then
	local pttl = redis.call('PTTL', KEYS[1])
	if pttl < 0 then
		return redis.error_reply('DLOCK key exists without a TTL: not a lock made by dlock')
	end
	if ARGV[3] == '1' then
		-- A live waiter tries again at the latest when the holder's key
		-- would expire (pttl), and at least once per its own TTL, so it is
		-- dead 2 x the longer of the two + 1 s after this try.
		local t = redis.call('TIME')
		local keep = 2 * math.max(tonumber(ARGV[2]), pttl) + 1000
		redis.call('ZADD', KEYS[3], t[1] * 1000 + math.floor(t[2] / 1000) + keep, ARGV[1])
		if redis.call('PTTL', KEYS[3]) < keep then
			redis.call('PEXPIRE', KEYS[3], keep)
		end
	end
	return {0, pttl, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '1' then
	redis.call('ZREM', KEYS[3], ARGV[1])
end
return {1, token}
