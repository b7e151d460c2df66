-- Single-node acquire. KEYS[1] lock key, KEYS[2] fence counter, KEYS[3]
-- waiter queue. ARGV[1] owner id, ARGV[2] TTL in milliseconds, ARGV[3] "1"
-- if the caller waits (is subscribed) and should be queued on failure.
-- Returns {1, token} when granted, {0, pttl, fence} when held by someone
-- else: fence is the counter now, so any grant made before this call (and
-- announced by a message that may still be on its way) has a token no
-- larger, and any grant after it a larger one.
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
		-- Queued until now + 2 TTL + 1 s: a live waiter tries again (and
		-- so refreshes this) at least once per holder TTL; a dead one
		-- drops out.
		local t = redis.call('TIME')
		local keep = 2 * tonumber(ARGV[2]) + 1000
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
