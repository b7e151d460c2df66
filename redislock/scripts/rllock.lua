-- Redlock acquire on one node. KEYS[1] lock key, KEYS[2] fence counter,
-- KEYS[3] waiter queue (waiter -> ticket), KEYS[4] waiter deadlines (waiter
-- -> server time in ms after which the entry is dead), KEYS[5] given-up
-- attempts (value -> server time in ms until which it is remembered).
-- ARGV[1] this attempt's key value (the waiter id, '.', the attempt's number),
-- ARGV[2] TTL in milliseconds, ARGV[3] the waiter's ticket ('' if the
-- caller does not wait), ARGV[4] the waiter id.
-- Returns {1, fence} when taken (fence: the node's last granted token, 0 if
-- none), {0, pttl, holder} when held by someone else (holder: the key's
-- value, so that the client can tell one holder of a majority from a split
-- vote).
-- The ticket is chosen by the client and is the same on every node, so the
-- nodes' queues agree on who is first and their releases name the same
-- waiter: one client tries, instead of every client splitting the vote.
if redis.call('ZSCORE', KEYS[5], ARGV[1]) then
	-- A copy of an attempt that arrives after the attempt was given up
	-- (rlrelease.lua): taking the key now would leave it to nobody.
	return redis.error_reply('DLOCK attempt arrived after it was given up')
end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
	-- A copy of this very request (a client-side retry).
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if cur and string.sub(cur, 1, #ARGV[4] + 1) == ARGV[4] .. '.' and
	tonumber(string.sub(cur, #ARGV[4] + 2)) < tonumber(string.sub(ARGV[1], #ARGV[4] + 2)) then
	-- An earlier attempt of the same waiter, failed, whose give-back has
	-- not arrived yet: the key is this attempt's to take over (the
	-- give-back only ever deletes its own attempt's value). Never the
	-- other way round: a late request of an earlier attempt must not take
	-- a key from a later one, which may hold the lock.
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if cur then
	local pttl = redis.call('PTTL', KEYS[1])
	if pttl < 0 then
		return redis.error_reply('DLOCK key exists without a TTL: not a lock made by dlock')
	end
	if ARGV[3] ~= '' then
		-- A live waiter tries again at the latest when the keys it found
		-- would expire, and at least once per its own TTL, so it is dead
		-- 2 x the longer of the two + 1 s after this try.
		local t = redis.call('TIME')
		local keep = 2 * math.max(tonumber(ARGV[2]), pttl) + 1000
		redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[4])
		redis.call('ZADD', KEYS[4], t[1] * 1000 + math.floor(t[2] / 1000) + keep, ARGV[4])
		if redis.call('PTTL', KEYS[3]) < keep then
			redis.call('PEXPIRE', KEYS[3], keep)
			redis.call('PEXPIRE', KEYS[4], keep)
		end
	end
	return {0, pttl, cur}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
